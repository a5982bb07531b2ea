"""The future of a request sent on a lane (``transport._lanes``): who reads its reply.

While the lane's loop runs, the loop completes it. Its ``result()`` on the loop's own thread drives
the lane (polls its socket) until the reply comes. On another thread it waits, and *falls back* to
the I/O thread when the loop no longer runs (or, for a request handed over by that thread, when
the loop did not take it within :data:`SLICE`: it is blocked): a request that never left is sent
there instead; one that was sent is asked again with the caller's ``refetch`` request.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from transport._errors import FutureTimeout, PeerLost
from transport._future import _LOCKS, _PENDING, _STRIPES, ReplyFuture
from transport._lane_waiter import Waiter

__all__ = ["OK", "SLICE", "LaneFuture", "Refetch"]

OK = {"op": "ok"}  # the header of a plain ok reply kept as its body (read only: its readers only .get() it)
_NO_BUFFERS: tuple = ()

SLICE = 0.1  # s: how often a waiting thread checks that the loop still drives the lane

Refetch = Callable[[], Any]  # -> a ReplyFuture of the same reply, asked another way


class LaneFuture(ReplyFuture):
    """The reply to a request sent on a lane; :meth:`result` drives the lane on the loop's thread."""

    __slots__ = ("lane", "rid", "resend", "refetch", "sent", "fell_back", "handed", "waiter", "on_end")

    def __init__(self, lane: Any, rid: int, resend: tuple, refetch: Refetch | None) -> None:
        self._value = _PENDING
        self._exc = None
        self._event = None
        self._callbacks = None
        self.lane = lane
        self.rid = rid
        self.resend = resend  # (header, body, buffers): what the I/O thread sends if it never left
        self.refetch = refetch
        self.sent = False
        self.fell_back = False
        self.handed = 0.0  # handed over by another thread at (monotonic); 0: sent by the loop itself
        self.waiter: Waiter | None = None  # what an await of this yields to its Task (woken when this is done)
        # (fn, a, b): fn(a, b) once, when done, before any waiter wakes (the caller's accounting of
        # calls in flight: no done-callback, closure or callback list per request)
        self.on_end: tuple | None = None

    def wait_on_loop(self, loop: Any) -> Waiter | None:
        """An asyncio future of ``loop`` (the lane's, running on this thread) done once this is (None:
        it is done already): what an ``await`` yields, woken straight by the lane's reader, no
        done-callback in between (see :mod:`transport._lane_waiter`). One waiter at a time (a second
        await gets its own done-callback)."""
        if self.waiter is not None:
            return None
        waiter = self.waiter = Waiter(loop, self.lane.ident)
        if self.done():  # completed meanwhile by another thread (a fall-back): it may not have seen the waiter
            self.waiter = None
            return None
        return waiter

    def _complete(self, value: Any, exc: BaseException | None) -> None:
        # ReplyFuture._complete, and on_end: run by the one completion that took the stripe lock first
        with _LOCKS[(id(self) >> 4) % _STRIPES]:
            if self._value is not _PENDING or self._exc is not None:
                return
            if exc is not None:
                self._exc = exc
            else:
                self._value = value
            event, callbacks, end = self._event, self._callbacks, self.on_end
            self._callbacks = self.on_end = None
        if end is not None:
            try:
                end[0](end[1], end[2])
            except Exception:  # (as a done-callback's failure: never breaks the reader)
                pass
        if callbacks:
            for cb in callbacks:
                try:
                    cb(self)
                except Exception:  # a callback must not break the I/O thread
                    pass
        if event is not None:
            event.set()
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            lane = self.lane
            if threading.get_ident() == lane.ident:
                inline, lane.inline = lane.inline, False  # (the reader's one Task resumed in place)
                _wake(waiter, inline)
            else:  # completed through the I/O thread (a fall-back, a burst): wake the loop from here
                try:
                    waiter.loop.call_soon_threadsafe(_wake, waiter)
                except RuntimeError:  # that loop is closed: nobody awaits there any more
                    pass

    def result(self, timeout: float | None = None) -> Any:
        """``(header, body, buffers)`` of the reply (a plain ok kept as its body: ``(OK, body, ())``)."""
        if self._value is not _PENDING:
            value = self._value
            return (OK, value, _NO_BUFFERS) if type(value) is bytes else value
        if self._exc is not None:
            raise self._exc
        end = None if timeout is None else time.monotonic() + timeout
        lane = self.lane
        if threading.get_ident() == lane.ident and not self.fell_back:
            lane.drive(self.done, end)
        else:
            while not self.done() and not self.fell_back:
                # the loop stopped, or is blocked and never took it over: the I/O thread sends it
                if not lane.driven() or (self.handed and not self.sent and time.monotonic() - self.handed > SLICE):
                    self.fall_back()
                    break
                wait = SLICE if end is None else min(SLICE, end - time.monotonic())
                if wait <= 0:
                    raise FutureTimeout("no reply within the timeout")
                try:
                    super().result(wait)
                    break
                except FutureTimeout:
                    continue
        value = super().result(None if end is None else max(0.0, end - time.monotonic()))
        return (OK, value, _NO_BUFFERS) if type(value) is bytes else value

    def add_done_callback(self, fn: Callable[[ReplyFuture], None]) -> None:
        if not self.done() and not self.lane.driven():
            self.fall_back()  # nobody would ever read the reply for it
        super().add_done_callback(fn)

    def fall_back(self) -> None:
        """The lane's loop no longer runs: get the reply through the I/O thread (any thread)."""
        lane = self.lane
        with lane.lock:
            if self.fell_back or self.done():
                return
            self.fell_back = True
            unsent = not self.sent
            if unsent:
                lane.unqueue(self)
        if unsent or self.refetch is None:
            header, body, buffers = self.resend
            if not unsent:  # sent, and no other way to ask: the outcome is unknown
                self.set_exception(PeerLost(lane.endpoint, "the event loop that sent the request stopped "
                                            "before its reply was read: it may have run"))
                return
            other = lane.node.request(lane.endpoint, header, body, buffers)
        else:
            other = self.refetch()
        other.add_done_callback(self._copy)

    def _copy(self, other: ReplyFuture) -> None:
        exc = other._exc
        if exc is not None:
            self.set_exception(exc)
        else:
            self.set_result(other._value)  # (a plain ok kept as its body by other: the same here)


def _wake(waiter: Waiter, inline: bool = True) -> None:
    try:
        waiter.wake(inline)
    except RuntimeError:  # its loop is closed (the thread drives the lane after asyncio.run)
        pass
