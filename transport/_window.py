"""Back-pressure: at most ``size`` requests in flight per peer; past it the issuing thread waits."""

from __future__ import annotations

import threading
from typing import Any, Callable

__all__ = ["DEFAULT_WINDOW", "Window"]

# Requests in flight per peer before the issuing thread waits (back-pressure, never failure).
DEFAULT_WINDOW = 10000
WINDOW_STALL = 1.0  # s without any reply from that peer: let one more through (never deadlock)


class Window:
    """Requests in flight per endpoint; a slot is taken by the issuing thread, freed on the I/O thread."""

    def __init__(self, size: int, on_io_thread: Callable[[], bool], closed: Callable[[], bool]) -> None:
        self.size = size if size and size > 0 else 0  # 0: no window
        self._on_io_thread = on_io_thread
        self._closed = closed
        self.inflight: dict[str, int] = {}
        self._mutex = threading.Lock()  # the condition's lock, taken directly where nothing waits (no Python-level __enter__)
        self._cv = threading.Condition(self._mutex)
        self._waiters = 0
        self.wait_hook: Callable[[], Any] | None = None  # a context manager around the wait

    def take(self, endpoint: str) -> None:
        """Count a request to ``endpoint``; wait while ``size`` are in flight (never on the I/O thread).

        A wait with no reply at all from that peer for ``WINDOW_STALL`` seconds lets the
        request through anyway: a worker holding a slot while it issues calls whose
        completion needs it must never deadlock; a slow peer then gets one more per stall.
        """
        cv = self._cv
        with self._mutex:
            n = self.inflight.get(endpoint, 0)
            if n < self.size or self._on_io_thread():
                self.inflight[endpoint] = n + 1
                return
        hook = self.wait_hook
        ctx = hook() if hook is not None else None
        if ctx is not None:
            ctx.__enter__()
        try:
            with cv:
                self._waiters += 1
                try:
                    while self.inflight.get(endpoint, 0) >= self.size and not self._closed():
                        if not cv.wait(WINDOW_STALL):
                            break  # no reply for a while: do not wait forever
                finally:
                    self._waiters -= 1
                self.inflight[endpoint] = self.inflight.get(endpoint, 0) + 1
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)

    def free(self, endpoint: str, count: int = 1) -> None:
        """``count`` requests to ``endpoint`` ended (the replies of a batch free their slots at once)."""
        with self._mutex:
            n = self.inflight.get(endpoint, count) - count
            if n > 0:
                self.inflight[endpoint] = n
            else:
                self.inflight.pop(endpoint, None)
            if self._waiters:
                self._cv.notify()
