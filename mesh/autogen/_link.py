"""Links: what this worker sends to each other worker, in order, batched, acknowledged off the loop."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Link", "Links"]

log = logging.getLogger("mesh.autogen")

_BATCH = 256  # most items in one delivery call

OnError = Callable[[BaseException], None]


class Link:
    """Everything this worker sends to one other worker: one sender thread (so the order of sends is
    the order of deliveries) and one thread that collects acknowledgements."""

    def __init__(self, wid: str, endpoint: Any, ack_timeout: float) -> None:
        self.wid = wid
        self.endpoint = endpoint
        self._ack_timeout = ack_timeout
        self._out: queue.SimpleQueue = queue.SimpleQueue()
        self._acks: queue.SimpleQueue = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send_loop, name=f"autogen-send-{wid[:8]}", daemon=True)
        self._reaper = threading.Thread(target=self._ack_loop, name=f"autogen-ack-{wid[:8]}", daemon=True)
        self._sender.start()
        self._reaper.start()

    def put(self, item: dict, on_error: OnError | None = None) -> None:
        self._out.put((item, on_error))

    def close(self) -> None:
        self._out.put(None)

    def join(self, timeout: float) -> None:
        self._sender.join(timeout)
        self._reaper.join(timeout)

    def _next_batch(self, first: tuple) -> tuple[list, bool]:
        """``first`` and what else is queued (up to ``_BATCH``); True when the close mark was among them."""
        batch = [first]
        while len(batch) < _BATCH:
            try:
                nxt = self._out.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                return batch, True
            batch.append(nxt)
        return batch, False

    def _send_loop(self) -> None:
        stop = False
        while not stop:
            first = self._out.get()
            if first is None:
                break
            batch, stop = self._next_batch(first)
            try:
                fut = self.endpoint.deliver([item for item, _ in batch])
            except Exception as exc:
                self._failed(batch, exc)
            else:
                self._acks.put((fut, batch))
        self._acks.put(None)

    def _ack_loop(self) -> None:
        while True:
            got = self._acks.get()
            if got is None:
                return
            fut, batch = got
            try:
                fut.result(timeout=self._ack_timeout)
            except Exception as exc:
                self._failed(batch, exc)

    def _failed(self, batch: list, exc: BaseException) -> None:
        log.warning("autogen: delivery of %d item(s) to worker %s failed: %s", len(batch), self.wid, exc)
        for _, on_error in batch:
            if on_error is not None:
                on_error(exc)


class Links:
    """This worker's links, one per other worker, made on first use from the directory table."""

    def __init__(self, endpoint_of: Callable[[str], Any], ack_timeout: float) -> None:
        self._endpoint_of = endpoint_of
        self._ack_timeout = ack_timeout
        self._links: dict[str, Link] = {}

    def get(self, wid: str, endpoint: Any = None) -> Link | None:
        """The link to ``wid`` (to ``endpoint`` when given, e.g. a reply address); None if unknown."""
        link = self._links.get(wid)
        if link is not None:
            return link
        if endpoint is None:
            endpoint = self._endpoint_of(wid)
            if endpoint is None:
                return None
        link = self._links[wid] = Link(wid, endpoint, self._ack_timeout)
        return link

    def reply(self, wid: str, endpoint: Any, item: dict) -> None:
        """Send a response to the worker that asked (its endpoint came with the request)."""
        link = self.get(wid, endpoint)
        if link is not None:
            link.put(item)

    def existing(self, wid: str) -> Link | None:
        return self._links.get(wid)

    def close(self, timeout: float = 2.0) -> None:
        links = list(self._links.values())
        for link in links:
            link.close()
        for link in links:
            link.join(timeout)
        self._links.clear()
