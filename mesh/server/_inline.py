"""Inline calls: a short call of an idle actor runs on the I/O thread that read it.

A call handed to a worker crosses two threads (I/O → worker → I/O: a condition-variable wake
and a pipe wake, ~50–75 µs each on two busy cores), which is most of a small call's cost. A
Python call cannot move to another thread once it runs, so the choice is made before it starts,
from the method's history (:class:`InlinePolicy`): a plain ``def`` method (not a coroutine, not
a stream, not of a durable object) that has run at least :data:`WARMUP` times, whose run time
averages under the threshold (``MESH_INLINE_US``, default 50 µs; ``0`` turns inline calls off),
and that never waited on another mesh task. Anything else runs on a worker, as before. The
time recorded is the method's own (not the reply's encoding, nor the start of the watchdog's
thread, which once counted as a slow run and kept a trivial method off the I/O thread for dozens
of calls on a loaded machine); during the warm-up the fastest run counts (first runs are cold).

Actor semantics are unchanged: only a call that finds its actor idle runs inline (so arrival
order holds), and it runs to completion before the I/O thread reads the next request.

If an inline call does wait after all (it calls another server, reads a future: the context's
``on_block``), or runs longer than :data:`STALL` (a watchdog notices), the I/O loop is handed to
a new thread (:meth:`transport.Node.hand_off_io`) and the call finishes on the old one, which
then leaves: the server goes on reading requests, re-entrant calls of the waiting chain are
admitted as for a worker, and the method never runs inline again (a wait) or not until its
average is short again (a slow run).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

__all__ = ["STALL", "WARMUP", "InlinePolicy", "Watchdog", "threshold_from_env"]

WARMUP = 4  # runs on a worker before a method may run inline
STALL = 0.02  # s: an inline call running longer hands the I/O loop to a new thread
_ALPHA = 0.125  # weight of the latest run in the average
_SLOW_RUN = 20  # a run this many times over the threshold sets the average to it (several short runs to recover)


def threshold_from_env() -> float:
    """The inline threshold in seconds from ``MESH_INLINE_US`` (default 50; 0: never inline)."""
    raw = os.environ.get("MESH_INLINE_US", "").strip()
    try:
        us = float(raw) if raw else 50.0
    except ValueError:
        us = 50.0
    return max(0.0, us) / 1e6


class InlinePolicy:
    """Run-time history of each ``(class, method)``: which may run on the I/O thread."""

    __slots__ = ("threshold", "_hist", "_lock")

    def __init__(self, threshold: float | None = None) -> None:
        self.threshold = threshold_from_env() if threshold is None else threshold
        # (class, method) -> [runs, average seconds, waited]
        self._hist: dict[tuple[type, str], list] = {}
        self._lock = threading.Lock()

    def allows(self, cls: type, method: str) -> bool:
        h = self._hist.get((cls, method))
        return h is not None and h[0] >= WARMUP and not h[2] and h[1] < self.threshold

    def history(self, cls: type, method: str) -> list | None:
        """The history entry of ``cls.method`` (``[runs, average, waited]``), or None: for a caller
        that checks and records many calls of one method (:meth:`allows_entry`, :meth:`add`)."""
        return self._hist.get((cls, method))

    def allows_entry(self, h: list | None) -> bool:
        return h is not None and h[0] >= WARMUP and not h[2] and h[1] < self.threshold

    def add(self, h: list, seconds: float) -> None:
        """:meth:`record` into an entry got from :meth:`history` (past its warm-up)."""
        h[0] += 1
        if seconds > _SLOW_RUN * self.threshold:
            h[1] = seconds
        else:
            h[1] += _ALPHA * (seconds - h[1])

    def record(self, cls: type, method: str, seconds: float) -> None:
        """A sync run of ``cls.method`` took ``seconds`` (it did not wait)."""
        key = (cls, method)
        h = self._hist.get(key)
        if h is None:
            with self._lock:
                h = self._hist.setdefault(key, [0, seconds, False])
        h[0] += 1  # a lost update under a race only delays the warm-up
        if h[0] <= WARMUP:  # warming up: the fastest run so far (a method's first runs are cold)
            if seconds < h[1]:
                h[1] = seconds
        elif seconds > _SLOW_RUN * self.threshold:
            h[1] = seconds
        else:
            h[1] += _ALPHA * (seconds - h[1])

    def waited(self, cls: type, method: str) -> None:
        """``cls.method`` waited on another mesh task: it never runs inline."""
        with self._lock:  # in place: a caller may hold the entry (mesh.server._inline_fast.FastLane.known)
            h = self._hist.get((cls, method))
            if h is None:
                self._hist[(cls, method)] = [0, 0.0, True]
            else:
                h[0], h[1], h[2] = 0, 0.0, True

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Plain data for diagnostics: ``{"Cls.method": {"runs", "avg_us", "inline"}}``."""
        return {f"{c.__name__}.{m}": {"runs": h[0], "avg_us": h[1] * 1e6, "inline": self.allows(c, m)}
                for (c, m), h in list(self._hist.items())}


class Watchdog:
    """Hands the I/O loop off when an inline call runs past :data:`STALL` (a thread that lives
    while inline calls happen, ticking every ``STALL / 2``; it leaves after a second without any)."""

    def __init__(self, hand_off: Callable[[int], bool]) -> None:
        self._hand_off = hand_off  # hand_off(io_ident): the running inline call's thread stops being the I/O thread
        self.lock = threading.Lock()
        self.current: tuple[int, int] | None = None  # (sequence number, thread) of the inline call running
        self.seq = 0
        self._thread: threading.Thread | None = None
        self.last = 0.0  # monotonic time of the last inline call

    def begin(self, ident: int) -> None:
        self.seq += 1
        self.current = (self.seq, ident)
        if self._thread is None:
            self.start()

    def start(self) -> None:
        """Start the watchdog's thread (after the call's ``seq`` and ``current`` are set)."""
        self.last = time.monotonic()
        self._thread = threading.Thread(target=self._watch, name="mesh-inline-watchdog", daemon=True)
        self._thread.start()

    def end(self, ident: int | None = None) -> None:
        """The inline call on thread ``ident`` ended (None: whichever runs). A call whose thread
        was handed off ends after its successor's calls began: it leaves theirs watched."""
        with self.lock:  # the watchdog never hands off a call that has just ended
            current = self.current
            if current is not None and (ident is None or current[1] == ident):
                self.current = None

    def _watch(self) -> None:
        seen: tuple[int, int] | None = None
        seen_seq = -1
        quiet = 0.0  # seconds without any inline call
        while True:
            time.sleep(STALL / 2)
            with self.lock:
                current = self.current
                if current is not None and current == seen:  # the same call, a tick later: stalled
                    self.current = current = None
                    self._hand_off(seen[1])
                quiet = quiet + STALL / 2 if self.seq == seen_seq else 0.0
                if quiet > 1.0:
                    self._thread = None  # begin() starts another (it bumps seq before it looks)
                    return
                seen, seen_seq = current, self.seq
