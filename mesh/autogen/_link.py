"""Links: what this worker sends to each other worker, in order, batched, acknowledged.

Everything is sent from the worker's asyncio loop: :meth:`Link.put` on an idle link sends the item at
once; otherwise it appends to a buffer and, once per loop turn, the buffer goes out as one
``deliver`` call (a mesh call returns its future at once).
Acknowledgements are read without waking the loop: each flush (and a timer while calls are
unacknowledged) drops the done ones, oldest first, and reports failed or overdue ones. So a
``send_message`` crosses no thread of this package on either side: the request and its response
each cost one mesh call. A link keeps at most ``MAX_INFLIGHT`` calls unacknowledged; past that the
buffer grows (batches get bigger) and the oldest acknowledgement is awaited, so a slow peer never
blocks the loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import mesh

from . import _wire

__all__ = ["MAX_INFLIGHT", "Link", "Links"]

log = logging.getLogger("mesh.autogen")

_BATCH = 256  # most items in one delivery call
MAX_INFLIGHT = 32  # unacknowledged delivery calls per link before sending waits for acknowledgements

OnError = Callable[[BaseException], None]


class Link:
    """Everything this worker sends to one other worker, in the order it was put.

    Calls to one mesh object run in the order they were sent, so batches sent one after the other
    (without waiting for the previous one's acknowledgement) are delivered in order.
    """

    def __init__(self, wid: str, endpoint: Any, ack_timeout: float, loop: asyncio.AbstractEventLoop,
                 loop_thread: int) -> None:
        self.wid = wid
        self.endpoint = endpoint
        self._ack_timeout = ack_timeout
        self._loop = loop
        self._loop_thread = loop_thread
        self._buf: list[tuple[dict, OnError | None]] = []
        self._scheduled = False
        self._inflight: deque[tuple[Any, list, float]] = deque()  # (future, batch, ack deadline), oldest first
        self._waiter: asyncio.Task | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._period = min(0.5, ack_timeout / 4)
        self._closed = False

    def put(self, item: dict, on_error: OnError | None = None) -> None:
        """Queue ``item``; it goes out on this loop turn's flush (thread-safe: another thread hands it over)."""
        loop = self._loop
        if threading.get_ident() != self._loop_thread:
            if not loop.is_closed():
                loop.call_soon_threadsafe(self.put, item, on_error)
            return
        if self._closed:
            if on_error is not None:
                on_error(ConnectionError(f"the link to worker {self.wid} is closed"))
            return
        if not self._buf and not self._scheduled:  # an idle link sends at once (a send_message's latency)
            self._reap()
            if not self._inflight:  # (a burst: the first goes now, the others together at the turn's end)
                self._send([(item, on_error)])
                if self._inflight and self._timer is None:
                    self._timer = loop.call_later(self._period, self._tick)
                return
        self._buf.append((item, on_error))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        self._reap()
        while self._buf and len(self._inflight) < MAX_INFLIGHT:
            batch, self._buf = self._buf[:_BATCH], self._buf[_BATCH:]
            self._send(batch)
        if self._buf and self._waiter is None:  # MAX_INFLIGHT reached: the oldest acknowledgement resumes
            self._waiter = self._loop.create_task(self._await_oldest())
        if self._inflight and self._timer is None:
            self._timer = self._loop.call_later(self._period, self._tick)

    def _send(self, batch: list) -> None:
        try:
            fut = self.endpoint.deliver([item for item, _ in batch])
        except mesh.MessageTooLarge as exc:
            if len(batch) == 1:  # this one item is too big for the other worker: it alone fails
                self._failed(batch, exc)
                return
            half = len(batch) // 2  # the others still go, in order
            self._send(batch[:half])
            self._send(batch[half:])
            return
        except Exception as exc:
            self._failed(batch, exc)
            return
        self._inflight.append((fut, batch, self._loop.time() + self._ack_timeout))

    def _reap(self) -> None:
        """Drop the acknowledged calls at the front (in order); fail those done in error or overdue."""
        inflight, now = self._inflight, self._loop.time()
        while inflight:
            fut, batch, deadline = inflight[0]
            if fut.done():
                inflight.popleft()
                try:
                    fut.result(0)
                except Exception as exc:
                    self._failed(batch, exc)
            elif now > deadline:
                inflight.popleft()
                self._failed(batch, TimeoutError(f"not acknowledged within {self._ack_timeout:g} s"))
            else:
                break

    def _tick(self) -> None:
        self._timer = None
        self._flush()

    async def _await_oldest(self) -> None:
        try:
            if self._inflight:
                fut, _, deadline = self._inflight[0]
                await asyncio.wait_for(_value(fut), max(0.0, deadline - self._loop.time()))
        except asyncio.CancelledError:
            raise
        except Exception:  # _reap reports it
            pass
        finally:
            self._waiter = None
        self._flush()

    def _failed(self, batch: list, exc: BaseException) -> None:
        log.warning("autogen: delivery of %d item(s) to worker %s failed: %s", len(batch), self.wid, exc)
        for _, on_error in batch:
            if on_error is not None:
                try:
                    on_error(exc)
                except Exception:
                    log.exception("autogen: error callback failed")

    async def aclose(self, timeout: float) -> None:
        """Send what is buffered, wait (at most ``timeout``) for the acknowledgements, then refuse more."""
        deadline = self._loop.time() + timeout
        self._flush()
        while (self._buf or self._inflight) and self._loop.time() < deadline:
            fut = self._inflight[0][0] if self._inflight else None
            if fut is not None:
                try:
                    await asyncio.wait_for(_value(fut), max(0.0, deadline - self._loop.time()))
                except Exception:
                    pass
            self._flush()
        self._closed = True
        for handle in (self._waiter, self._timer):
            if handle is not None:
                handle.cancel()
        left = [entry for _, batch, _ in self._inflight for entry in batch] + self._buf
        self._inflight.clear()
        self._buf = []
        if left:
            self._failed(left, ConnectionError("the runtime stopped before these items were acknowledged"))


async def _value(fut: Any) -> Any:
    return await fut


class Links:
    """This worker's links, one per other worker, made on first use from the directory table.

    Call :meth:`bind` on the worker's running loop before use; links live on it.
    """

    def __init__(self, endpoint_of: Callable[[str], Any], ack_timeout: float) -> None:
        self._endpoint_of = endpoint_of
        self._ack_timeout = ack_timeout
        self._links: dict[str, Link] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Links live on ``loop``, run by the calling thread (puts from other threads are handed over)."""
        self._loop, self._loop_thread = loop, threading.get_ident()

    def get(self, wid: str, endpoint: Any = None) -> Link | None:
        """The link to ``wid`` (to ``endpoint`` when given, e.g. a reply address); None if unknown."""
        link = self._links.get(wid)
        if link is not None:
            return link
        if endpoint is None:
            endpoint = self._endpoint_of(wid)
            if endpoint is None:
                return None
        assert self._loop is not None, "Links.bind is called when the runtime starts"
        link = self._links[wid] = Link(wid, endpoint, self._ack_timeout, self._loop, self._loop_thread)
        return link

    def reply(self, wid: str, ref: Any, item: dict) -> None:
        """Send a response to the worker that asked: by the table, else by the reply address it sent."""
        link = self.get(wid)
        if link is None and ref is not None:
            try:
                link = self.get(wid, _wire.endpoint_from(ref))
            except ValueError as exc:
                log.warning("autogen: dropped a response to worker %s: %s", wid, exc)
                return
        if link is not None:
            link.put(item)

    def existing(self, wid: str) -> Link | None:
        return self._links.get(wid)

    async def aclose(self, timeout: float = 2.0) -> None:
        links = list(self._links.values())
        self._links.clear()
        if links:
            await asyncio.gather(*(link.aclose(timeout) for link in links))
