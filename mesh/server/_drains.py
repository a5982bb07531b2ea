"""Constructions in bursts, built by "drains" (worker tasks that build queued objects in turn)."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable

__all__ = ["Drains", "SLOW", "STALL", "BUDGET", "MAX_DRAINS"]

# Constructions arriving in a burst are built by one worker task in turn (a "drain"), not by one
# worker wake-up each: waking a worker per object cost most of the server's time per creation.
# A constructor that waits on a mesh task hands the rest of the queue to a new drain; a class
# whose constructor ran longer than SLOW is built one per worker task from then on, as before;
# a drain whose current constructor has run STALL is joined by another when more arrive.
SLOW = 0.05  # s
STALL = 0.05  # s
BUDGET = 0.05  # s: a drain lets other queued work run after this long (it resubmits itself)
MAX_DRAINS = 4


class _Drain:
    __slots__ = ("handed",)

    def __init__(self) -> None:
        self.handed = False  # its queue was handed to another drain (the constructor waits)


class Drains:
    """The queue of constructions and the drains that build them (``construct(job, on_block)``
    builds one; ``on_block`` hands the rest of the queue to a new drain while it waits)."""

    def __init__(self, runner: Any, construct: Callable[[tuple, Callable[[], None]], None]) -> None:
        self.runner = runner
        self.construct = construct
        self.lock = threading.Lock()
        self.queue: deque[tuple] = deque()  # constructions waiting for a drain
        self.count = 0  # drain tasks submitted or running
        self.job_started = 0.0  # when the latest construction of a drain started
        self.watching = False  # a worker task waits to join a construction that may stall (_watch)
        self.slow: set[str] = set()  # classes built one per worker task (see SLOW)

    def add(self, job: tuple) -> None:
        """Queue a construction (I/O thread); start a drain if none runs, or another if it stalls."""
        with self.lock:
            self.queue.append(job)
            start = self.count == 0 or (
                self.count < MAX_DRAINS and time.monotonic() - self.job_started > STALL)
            if start:
                self.count += 1
            watch = not start and not self.watching and self.count < MAX_DRAINS
            if watch:
                self.watching = True
        if start:
            try:
                self.runner.workers.submit(self._drain)
            except BaseException:
                with self.lock:
                    self.count -= 1
                raise
        elif watch:
            try:
                self.runner.workers.submit(self._watch)
            except RuntimeError:  # shutting down
                self.watching = False

    def _watch(self) -> None:
        """Constructions wait behind one that has not run STALL yet (a worker task): if it runs past
        STALL while they wait, join it with another drain (else they waited for the constructor)."""
        while True:
            with self.lock:
                if not self.queue or self.count >= MAX_DRAINS:
                    self.watching = False
                    return
                wait = self.job_started + STALL - time.monotonic()
                if wait <= 0:
                    self.watching = False
                    self.count += 1
                    break
            time.sleep(wait)  # (at most STALL: the construction that runs now)
        self._drain()

    def _drain(self) -> None:
        """Build queued objects in turn (a worker task; see SLOW)."""
        me = _Drain()
        until = time.monotonic() + BUDGET

        def hand_off() -> None:  # the constructor waits on a mesh task: the queue goes on without it
            with self.lock:
                if me.handed:
                    return
                me.handed = True
                more = bool(self.queue)
                if not more:
                    self.count -= 1
            if more:
                self._resubmit()

        while True:
            with self.lock:
                if me.handed:
                    return
                if not self.queue:
                    self.count -= 1
                    return
                if time.monotonic() > until:  # other queued work (calls) gets its turn
                    resubmit = True
                else:
                    resubmit = False
                    job = self.queue.popleft()
                    started = self.job_started = time.monotonic()
            if resubmit:
                self._resubmit()
                return
            self.construct(job, hand_off)
            if time.monotonic() - started > SLOW:
                self.slow.add(job[1])

    def _resubmit(self) -> None:
        try:
            self.runner.workers.submit(self._drain)
        except RuntimeError:  # shutting down: the queued creations are never answered (as before)
            with self.lock:
                self.count -= 1

