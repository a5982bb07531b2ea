"""The transport's logger, and the rate-limited warnings of the I/O thread."""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

__all__ = ["WARN_BURST", "WARN_PERIOD", "Warnings", "log"]

log = logging.getLogger("transport")

WARN_BURST = 5  # warnings of one kind written per period; the rest are counted, then summarised
WARN_PERIOD = 10.0  # s


class Warnings:
    """Warnings raised on the I/O thread: rate-limited per kind, and written by another thread.

    The I/O thread only appends to a bounded deque: a handler that blocks (stderr on
    a pipe nobody reads) stalls the writer thread, never the sockets. Past
    ``WARN_BURST`` of a kind in ``WARN_PERIOD`` seconds, one summary line says how
    many were suppressed.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.log = logger
        self.counts: dict[str, list] = {}  # kind -> [period start, written, suppressed]
        self.lock = threading.Lock()
        self.queue: collections.deque = collections.deque(maxlen=1000)
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None

    def __call__(self, kind: str, msg: str, *args: Any) -> None:
        if not self.log.isEnabledFor(logging.WARNING):
            return
        now = time.monotonic()
        with self.lock:
            c = self.counts.get(kind)
            if c is None or now - c[0] >= WARN_PERIOD:
                if c is not None and c[2]:
                    self.queue.append((f"%d more warnings like this were suppressed: {msg}", (c[2], *args)))
                c = self.counts[kind] = [now, 0, 0]
            if c[1] >= WARN_BURST:
                c[2] += 1
                return
            c[1] += 1
            self.queue.append((msg, args))
            if self.thread is None:
                self.thread = threading.Thread(target=self._write, name="mesh-log", daemon=True)
                self.thread.start()
        self.wake.set()

    def _write(self) -> None:
        while True:
            self.wake.wait(WARN_PERIOD)
            self.wake.clear()
            while True:
                try:
                    msg, args = self.queue.popleft()
                except IndexError:
                    break
                try:
                    self.log.warning(msg, *args)
                except Exception:
                    pass
            now = time.monotonic()
            with self.lock:  # summarise periods that ended with suppressed warnings
                ended = [(k, c) for k, c in self.counts.items() if c[2] and now - c[0] >= WARN_PERIOD]
                for k, _ in ended:
                    del self.counts[k]
            for k, c in ended:
                try:
                    self.log.warning("%d more %s warnings were suppressed in the last %g s", c[2], k, WARN_PERIOD)
                except Exception:
                    pass
