"""A light future for replies: what ``concurrent.futures.Future`` does, at a fraction of the cost.

One is made per request, so its cost counts: no Condition per instance, a
lock only for those who wait, callbacks run by whoever completes it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from transport._errors import FutureTimeout

__all__ = ["PartsFuture", "ReplyFuture", "FutureTimeout"]

_PENDING = object()
# Striped locks, each held only for a few instructions. One lock shared by every future made the
# issuing thread and the I/O thread queue on it (a holder preempted by the GIL switch blocks the
# other thread for a whole switch interval); a future takes the stripe of its id.
_STRIPES = 61
_LOCKS = tuple(threading.Lock() for _ in range(_STRIPES))


class ReplyFuture:
    """The eventual reply to a request (thread-safe)."""

    __slots__ = ("_value", "_exc", "_event", "_callbacks", "__weakref__")


    def __init__(self) -> None:
        self._value: Any = _PENDING
        self._exc: BaseException | None = None
        self._event: threading.Event | None = None
        self._callbacks: list[Callable[[ReplyFuture], None]] | None = None

    def done(self) -> bool:
        return self._value is not _PENDING or self._exc is not None

    def set_running_or_notify_cancel(self) -> bool:  # concurrent.futures compatibility
        return True

    def set_result(self, value: Any) -> None:
        self._complete(value, None)

    def set_exception(self, exc: BaseException) -> None:
        self._complete(_PENDING, exc)

    def _complete(self, value: Any, exc: BaseException | None) -> None:
        with _LOCKS[(id(self) >> 4) % _STRIPES]:
            if self.done():
                return
            if exc is not None:
                self._exc = exc
            else:
                self._value = value
            event, callbacks = self._event, self._callbacks
            self._callbacks = None
        if callbacks:  # before waking waiters: they may rely on what the callbacks record
            for cb in callbacks:
                try:
                    cb(self)
                except Exception:  # a callback must not break the I/O thread
                    pass
        if event is not None:
            event.set()

    def add_done_callback(self, fn: Callable[[ReplyFuture], None]) -> None:
        with _LOCKS[(id(self) >> 4) % _STRIPES]:
            if not self.done():
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(fn)
                return
        fn(self)

    def result(self, timeout: float | None = None) -> Any:
        """The reply; raises the failure, or :class:`FutureTimeout`."""
        if not self.done():
            with _LOCKS[(id(self) >> 4) % _STRIPES]:
                if not self.done():
                    if self._event is None:
                        self._event = threading.Event()
                    event = self._event
                else:
                    event = None
            if event is not None and not event.wait(timeout):
                raise FutureTimeout("no reply within the timeout")
        if self._exc is not None:
            raise self._exc
        return self._value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        try:
            self.result(timeout)
        except FutureTimeout:
            raise
        except BaseException as exc:  # noqa: BLE001
            return exc
        return None


class PartsFuture(ReplyFuture):
    """The reply to a request answered in parts: every reply whose header has ``more`` goes to
    ``on_part((header, body, buffers))`` (on the I/O thread; it must not block), and the one
    without ``more`` completes the future."""

    __slots__ = ("on_part",)

    def __init__(self, on_part: Callable[[tuple], None]) -> None:
        super().__init__()
        self.on_part = on_part
