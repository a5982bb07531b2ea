"""Requests to other workers that await an answer (``send_message``, state and metadata), and their
liveness: while an answer is pending the caller pings that worker; one that does not answer within
the heartbeat timeout fails the request with :class:`WorkerUnavailable`."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

from autogen_core import CancellationToken

import mesh

from ._errors import WorkerUnavailable
from ._link import Link, Links
from ._remote_errors import rebuild_error
from ._serde import Codec

__all__ = ["Pending"]


class Pending:
    """Request id -> (future on the worker's loop, worker asked). Set :attr:`loop` before use."""

    def __init__(self, heartbeat: float) -> None:
        self.heartbeat = heartbeat
        self.loop: asyncio.AbstractEventLoop | None = None
        self._entries: dict[str, tuple[asyncio.Future, str]] = {}

    def __bool__(self) -> bool:
        return bool(self._entries)

    async def request(self, link: Link, item: dict, token: CancellationToken | None = None) -> Any:
        """Send ``item`` (a request kind) over ``link`` and await the response.

        ``token`` cancelled (from any thread), or the awaiting task cancelled: a ``cancel`` item follows
        the request over the same link, and the other worker cancels the handler's token and task; the
        caller gets ``CancelledError``."""
        loop = self.loop
        assert loop is not None
        request_id = uuid.uuid4().hex
        fut = loop.create_future()
        self._entries[request_id] = (fut, link.wid)
        link.put({**item, "rid": request_id},
                 lambda exc: loop.call_soon_threadsafe(self.fail, request_id, exc))
        if token is not None:
            loop_thread = threading.get_ident()

            def on_cancel() -> None:  # on the thread that cancels the token: hand over to the loop
                if threading.get_ident() != loop_thread:
                    if not loop.is_closed():
                        loop.call_soon_threadsafe(on_cancel)
                    return
                if not fut.done():
                    fut.cancel()

            token.add_callback(on_cancel)
        try:
            return await fut
        except asyncio.CancelledError:  # the token, or the caller's task itself: the handler over there stops too
            if request_id in self._entries:
                link.put({"k": "cancel", "rid": request_id})
            raise
        finally:
            self._entries.pop(request_id, None)

    def answer(self, item: dict, codec: Codec) -> None:
        """A response item from the worker asked (on the loop)."""
        entry = self._entries.pop(str(item["rid"]), None)
        if entry is None or entry[0].done():
            return
        fut = entry[0]
        error = item.get("error")
        if error is not None:
            fut.set_exception(rebuild_error(error))
            return
        try:
            fut.set_result(codec.decode_result(item))
        except Exception as exc:
            fut.set_exception(exc)

    def fail(self, request_id: str, exc: BaseException) -> None:
        entry = self._entries.pop(request_id, None)
        if entry is None or entry[0].done():
            return
        fut, wid = entry
        if not isinstance(exc, (mesh.ServerUnavailable, mesh.MessageTooLarge)):
            exc = WorkerUnavailable(f"worker {wid} cannot be reached: {exc}")
        fut.set_exception(exc)

    def fail_all(self, message: str) -> None:
        for fut, _ in list(self._entries.values()):
            if not fut.done():
                fut.set_exception(WorkerUnavailable(message))
        self._entries.clear()

    # ------------------------------------------------------------------ liveness (a thread)
    def fail_worker(self, wid: str, exc: BaseException) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        error = WorkerUnavailable(f"worker {wid} did not answer within {self.heartbeat:g} s: {exc}")
        for rid, (_, w) in list(self._entries.items()):
            if w == wid:
                loop.call_soon_threadsafe(self.fail, rid, error)

    def watch(self, links: Links, stop: threading.Event) -> None:
        """Until ``stop``: ping every worker an answer is awaited from; fail the requests of the silent."""
        period = max(0.1, self.heartbeat / 3)
        while not stop.wait(period):
            waiting = {wid for _, wid in list(self._entries.values())}
            pings: dict[str, Any] = {}
            for wid in waiting:
                link = links.existing(wid)
                if link is None:
                    continue
                try:
                    pings[wid] = link.endpoint.ping()
                except Exception as exc:
                    pings[wid] = exc
            for wid, fut in pings.items():
                try:
                    if isinstance(fut, BaseException):
                        raise fut
                    fut.result(timeout=self.heartbeat)
                except Exception as exc:
                    self.fail_worker(wid, exc)
