"""``mesh.wait`` and ``mesh.as_completed``: wait for the first of many futures, from any thread.

No polling: every future gets a done-callback (run by the I/O thread when its reply arrives)
that records it under one condition; the waiting thread sleeps on that condition. A server
worker that waits here is inside ``blocking()``, like any wait on a mesh future.

A future made under ``mesh.deadline()`` counts as done (failed: reading it raises
``DeadlineExceeded``) at its deadline if its reply has not come by then, so a wait ends then
even when its producer cannot be reached.

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
from mesh.client._cancel import past_deadline
from mesh.client._replies import interrupted

__all__ = ["as_completed", "wait"]


class _Finished:
    """Indices of futures in the order they finished, with a condition to wait on."""

    def __init__(self, futures: list[Any]) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.order: list[int] = []
        self.seen: set[int] = set()
        self.futures = futures
        for fut in futures:
            if not callable(getattr(fut, "_mesh_on_done", None)):
                raise TypeError(f"futures must be mesh futures (AsyncResult, Placeholder, Stream), not {type(fut).__name__}")
        # (deadline, index) of the futures made under mesh.deadline(), earliest first
        self.due = sorted((d["_mesh_deadline"], i) for i, fut in enumerate(futures)
                          if (d := getattr(fut, "__dict__", {})).get("_mesh_deadline") is not None)
        for i, fut in enumerate(futures):
            fut._mesh_on_done(lambda i=i: self._done(i))

    def _done(self, index: int) -> None:  # any thread
        with self.cond:
            if index in self.seen:  # done by its reply and at its deadline: counted once
                return
            self.seen.add(index)
            self.order.append(index)
            self.cond.notify_all()

    def _overdue(self, now: float) -> float | None:
        """Futures whose deadline passed count as done (caller holds ``cond``); the next deadline."""
        due = self.due
        while due and due[0][0] <= now:
            _, index = due.pop(0)
            if index not in self.seen:
                fut = self.futures[index]
                if not fut.done():
                    past_deadline(fut)  # reading it raises DeadlineExceeded, as its result() would now
                self.seen.add(index)
                self.order.append(index)
        while due and due[0][1] in self.seen:
            due.pop(0)
        return due[0][0] if due else None

    def wait_for(self, count: int, deadline: float | None) -> int:
        """Wait until ``count`` futures finished or the deadline passed; how many finished."""
        with self.cond:
            if self.due:
                self._overdue(time.monotonic())
            if len(self.order) >= count:
                return len(self.order)
            with blocking():
                while len(self.order) < count:
                    now = time.monotonic()
                    due = self._overdue(now) if self.due else None
                    if len(self.order) >= count:
                        break
                    left = None if deadline is None else deadline - now
                    if left is not None and left <= 0:
                        break
                    if due is not None and (left is None or due - now < left):
                        left = max(0.0, due - now)
                    try:
                        self.cond.wait(left)
                    except KeyboardInterrupt:  # Ctrl-C: what this process started is cancelled
                        interrupted()
                        raise
            return len(self.order)


def _listed(futures: Iterable[Any], what: str) -> list[Any]:
    # one future given alone would be iterated: its value (or a stream's items), waited for without the timeout
    if callable(getattr(type(futures), "_mesh_on_done", None)):
        raise TypeError(f"mesh.{what}() takes a list of futures (as ray.wait does), not one {type(futures).__name__}")
    return list(futures)


def wait(futures: Iterable[Any], num_returns: int = 1, timeout: float | None = None) -> tuple[list[Any], list[Any]]:
    """Wait until ``num_returns`` of ``futures`` are done, or ``timeout`` seconds passed.

    Like ``ray.wait``: returns ``(done, pending)``, two lists; ``done`` holds the first
    ``num_returns`` futures to finish, ``pending`` the others; both keep the order of ``futures``
    (as ``ray.wait``'s lists do). A future that failed is done too (reading it raises). After ``timeout``, ``done``
    holds those that finished by then (maybe none).

    Raises:
        ValueError: ``num_returns`` is negative or greater than the number of futures (an empty
            ``futures`` gives ``([], [])``, as ``ray.wait([])`` does).
        TypeError: something else than a mesh future is given.
    """
    futures = _listed(futures, "wait")
    if not futures:  # as ray.wait([]): nothing to wait for, whatever num_returns says
        return [], []
    if num_returns < 0 or num_returns > len(futures):
        raise ValueError(f"num_returns must be between 0 and the number of futures ({len(futures)}), not {num_returns}")
    deadline = None if timeout is None else time.monotonic() + timeout
    finished = _Finished(futures)
    finished.wait_for(num_returns, deadline)
    with finished.cond:
        taken = sorted(finished.order[:num_returns])  # in the order given, as ray.wait's
    chosen = set(taken)
    return [futures[i] for i in taken], [f for i, f in enumerate(futures) if i not in chosen]


def as_completed(futures: Iterable[Any], timeout: float | None = None) -> Iterator[Any]:
    """Yield ``futures`` as they finish (done or failed), first finished first.

    Raises:
        CallTimeout: ``timeout`` seconds (from this call) passed with futures left; a ``TimeoutError``,
            as with ``concurrent.futures.as_completed``.
        TypeError: something else than a mesh future is given.
    """
    futures = _listed(futures, "as_completed")
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
