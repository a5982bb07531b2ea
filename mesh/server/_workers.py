"""The server's worker pool: ``capacity`` running tasks, blocked ones don't count.

A task that waits on another mesh task (see :func:`mesh._core.context.blocking`)
gives its slot back while it waits, and a new thread takes queued work if
none is idle. So an agent that waits on another agent of the same server
never starves the pool, even at ``capacity=1`` (AgentScope deadlocks there).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["WorkerPool"]

log = logging.getLogger("mesh.server")

_IDLE_EXIT = 30.0  # seconds an extra (above capacity) idle thread lives


class WorkerPool:
    """Threads running submitted callables, at most ``capacity`` unblocked at once."""

    def __init__(self, capacity: int, name: str = "mesh-worker") -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._name = name
        lock = threading.Lock()
        self._cv = threading.Condition(lock)  # workers wait here for tasks
        self._idle_cv = threading.Condition(lock)  # wait_idle() waits here, so going idle wakes no worker
        self._tasks: deque[Callable[[], None]] = deque()
        self._threads: set[threading.Thread] = set()
        self._active = 0
        self._idle = 0
        self._blocked = 0
        self._closed = False

    @property
    def load(self) -> int:
        """Running (unblocked) tasks plus queued ones."""
        return self._active + len(self._tasks)

    @property
    def queued(self) -> int:
        return len(self._tasks)

    @property
    def running(self) -> int:
        return self._active + self._blocked

    def submit(self, fn: Callable[[], None]) -> None:
        with self._cv:
            if self._closed:
                raise RuntimeError("worker pool is closed")
            self._tasks.append(fn)
            self._wake_or_spawn()

    def _wake_or_spawn(self) -> None:
        # caller holds the lock; every idle or starting thread will take one task
        want = min(len(self._tasks), self.capacity - self._active)
        if want <= 0:
            return
        if self._idle > 0:
            self._cv.notify(want)
        for _ in range(want - self._idle):
            t = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True)
            self._threads.add(t)
            self._idle += 1  # counted idle until it takes a task
            t.start()

    def prestart(self) -> None:
        """Start one idle worker now (none runs yet): a server's first request then does not wait
        for a thread to start. It stays, as every worker up to ``capacity`` does."""
        with self._cv:
            if self._closed or self._threads:
                return
            t = threading.Thread(target=self._work, name=f"{self._name}-0", daemon=True)
            self._threads.add(t)
            self._idle += 1
            t.start()

    def block(self) -> None:
        """The calling worker waits on another task: free its slot."""
        with self._cv:
            self._active -= 1
            self._blocked += 1
            self._wake_or_spawn()

    def unblock(self) -> None:
        with self._cv:
            self._blocked -= 1
            self._active += 1  # may exceed capacity for a moment; no new work starts until it drops

    def _work(self) -> None:
        me = threading.current_thread()
        cv = self._cv
        while True:
            with cv:
                while not self._closed and not (self._tasks and self._active < self.capacity):
                    if not cv.wait(_IDLE_EXIT) and len(self._threads) > self.capacity:
                        self._idle -= 1
                        self._threads.discard(me)
                        return
                if not self._tasks:  # closed and drained
                    self._idle -= 1
                    self._threads.discard(me)
                    return
                fn = self._tasks.popleft()
                self._idle -= 1
                self._active += 1
            try:
                fn()
            except BaseException:  # a task must never kill the worker
                log.exception("worker task failed")
            with cv:
                self._active -= 1
                self._idle += 1
                if self._tasks and self._active < self.capacity:
                    cv.notify()
                elif not (self._tasks or self._active or self._blocked):
                    self._idle_cv.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing runs or is queued (blocked tasks count as running)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._tasks or self._active or self._blocked:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle_cv.wait(remaining)
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Stop taking work; wait up to ``timeout`` for running tasks. True if all ended."""
        with self._cv:
            self._closed = True
            self._tasks.clear()
            self._cv.notify_all()
            self._idle_cv.notify_all()
            threads = list(self._threads)
        ok = True
        for t in threads:
            if t is threading.current_thread():
                continue
            t.join(timeout)
            ok = ok and not t.is_alive()
        return ok
