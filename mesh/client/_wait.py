"""``mesh.wait`` and ``mesh.as_completed``: wait for the first of many futures, from any thread.

No polling: every future gets a done-callback (run by the I/O thread when its reply arrives)
that records it under one condition; the waiting thread sleeps on that condition. A server
worker that waits here is inside ``blocking()``, like any wait on a mesh future.

Any object with ``_mesh_on_done(fn)`` is accepted (``AsyncResult``, ``Placeholder``, and
``Stream`` when it has the hook). In asyncio code, use ``asyncio.wait`` / ``asyncio.gather`` /
``asyncio.as_completed``: the futures are awaitables.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from mesh._core.context import blocking
from mesh._errors import CallTimeout
from mesh.client._replies import interrupted

__all__ = ["as_completed", "wait"]


class _Finished:
    """Indices of futures in the order they finished, with a condition to wait on."""

    def __init__(self, futures: list[Any]) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.order: list[int] = []
        for fut in futures:
            if not callable(getattr(fut, "_mesh_on_done", None)):
                raise TypeError(f"futures must be mesh futures (AsyncResult, Placeholder, Stream), not {type(fut).__name__}")
        for i, fut in enumerate(futures):
            fut._mesh_on_done(lambda i=i: self._done(i))

    def _done(self, index: int) -> None:  # any thread
        with self.cond:
            self.order.append(index)
            self.cond.notify_all()

    def wait_for(self, count: int, deadline: float | None) -> int:
        """Wait until ``count`` futures finished or the deadline passed; how many finished."""
        with self.cond:
            if len(self.order) >= count:
                return len(self.order)
            with blocking():
                while len(self.order) < count:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        break
                    try:
                        self.cond.wait(left)
                    except KeyboardInterrupt:  # Ctrl-C: what this process started is cancelled
                        interrupted()
                        raise
            return len(self.order)


def wait(futures: Iterable[Any], num_returns: int = 1, timeout: float | None = None) -> tuple[list[Any], list[Any]]:
    """Wait until ``num_returns`` of ``futures`` are done, or ``timeout`` seconds passed.

    Like ``ray.wait``: returns ``(done, pending)``, two lists; ``done`` holds at most
    ``num_returns`` futures in the order they finished, ``pending`` the others in the order
    given. A future that failed is done too (reading it raises). After ``timeout``, ``done``
    holds those that finished by then (maybe none).

    Raises:
        ValueError: ``num_returns`` is negative or greater than the number of futures.
        TypeError: something else than a mesh future is given.
    """
    futures = list(futures)
    if num_returns < 0 or num_returns > len(futures):
        raise ValueError(f"num_returns must be between 0 and the number of futures ({len(futures)}), not {num_returns}")
    deadline = None if timeout is None else time.monotonic() + timeout
    finished = _Finished(futures)
    finished.wait_for(num_returns, deadline)
    with finished.cond:
        taken = finished.order[:num_returns]
    chosen = set(taken)
    return [futures[i] for i in taken], [f for i, f in enumerate(futures) if i not in chosen]


def as_completed(futures: Iterable[Any], timeout: float | None = None) -> Iterator[Any]:
    """Yield ``futures`` as they finish (done or failed), first finished first.

    Raises:
        CallTimeout: ``timeout`` seconds (from this call) passed with futures left; a ``TimeoutError``,
            as with ``concurrent.futures.as_completed``.
        TypeError: something else than a mesh future is given.
    """
    futures = list(futures)
    deadline = None if timeout is None else time.monotonic() + timeout
    finished = _Finished(futures)
    return _yielding(futures, finished, deadline, timeout)


def _yielding(futures: list[Any], finished: _Finished, deadline: float | None, timeout: float | None) -> Iterator[Any]:
    given = 0
    while given < len(futures):
        count = finished.wait_for(given + 1, deadline)
        if count <= given:
            raise CallTimeout(f"{len(futures) - given} of {len(futures)} futures unfinished after {timeout} s")
        with finished.cond:
            ready = finished.order[given:count]
        for index in ready:
            given += 1
            yield futures[index]
