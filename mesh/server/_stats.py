"""Per class and method call counters of one server: calls, errors by kind, a latency histogram.

Updated where a call completes (:mod:`~mesh.server._calls`), read by ``status`` (``zmq-agent-server
top``) and the HTTP edge's ``/metrics``. The cost on a call is one lock, a dict lookup and three
integer additions: the histogram's bucket is the bit length of the latency in microseconds
(bucket ``i`` holds latencies below ``2**i`` µs), so nothing is sorted or searched on the hot
path; quantiles and cumulative buckets are computed when someone reads them.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from mesh._core import wire

__all__ = ["BUCKETS", "CallStats", "bucket_bounds", "quantile"]

BUCKETS = 27  # 2**0 µs .. 2**26 µs (67 s); the last bucket holds everything slower


def bucket_bounds() -> list[float]:
    """Upper bound in seconds of each bucket but the last (which is +Inf)."""
    return [2**i / 1e6 for i in range(BUCKETS - 1)]


def quantile(counts: list[int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a histogram, in seconds: the upper bound of the bucket it falls
    in (an over-estimate by less than 2x); ``None`` when the histogram is empty."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        seen += n
        if seen >= rank and n:
            return 2**i / 1e6
    return 2 ** (BUCKETS - 1) / 1e6


_monotonic = time.monotonic


class _Row:
    """The counters of one class and method; ``lock`` is their :class:`CallStats`' lock."""

    __slots__ = ("calls", "errors", "hist", "seconds", "lock")

    def __init__(self, lock: Any) -> None:
        self.calls = 0
        self.errors: dict[str, int] = {}
        self.hist = [0] * BUCKETS
        self.seconds = 0.0
        self.lock = lock

    def ok(self, started: float) -> None:
        """:meth:`CallStats.record` of a call that ended ``ok``, for a caller that keeps the row
        (:meth:`CallStats.row`): no key, no lookup, no header."""
        elapsed = _monotonic() - started
        i = int(elapsed * 1e6).bit_length()
        with self.lock:
            self.calls += 1
            self.seconds += elapsed
            self.hist[i if i < BUCKETS else BUCKETS - 1] += 1


class CallStats:
    """Counters by ``(class, method)``; :meth:`record` is thread-safe and cheap."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], _Row] = {}
        self._lock = threading.Lock()

    def record(self, cls: str, method: str, started: float, header: dict) -> None:
        """A call of ``cls.method`` that arrived at ``started`` (monotonic) ended with ``header``."""
        elapsed = time.monotonic() - started
        i = int(elapsed * 1e6).bit_length()
        key = (cls, method)
        with self._lock:
            row = self._rows.get(key)
            if row is None:
                row = self._rows[key] = _Row(self._lock)
            row.calls += 1
            row.seconds += elapsed
            row.hist[i if i < BUCKETS else BUCKETS - 1] += 1
            if header.get("op") != wire.OK:
                kind = header.get("type") or header.get("kind") or "error"
                row.errors[kind] = row.errors.get(kind, 0) + 1

    def row(self, cls: str, method: str) -> _Row:
        """The row of ``cls.method`` (made if new; a row is never dropped), for :meth:`_Row.ok`."""
        with self._lock:
            row = self._rows.get((cls, method))
            if row is None:
                row = self._rows[(cls, method)] = _Row(self._lock)
            return row

    def snapshot(self) -> list[dict[str, Any]]:
        """Plain data: one dict per class and method (``calls``, ``errors`` by kind, ``seconds``,
        ``hist`` (counts per bucket), ``p50`` and ``p99`` in seconds)."""
        with self._lock:
            rows = [(k, r.calls, dict(r.errors), list(r.hist), r.seconds) for k, r in self._rows.items()]
        return [{
            "class": cls, "method": method, "calls": calls, "errors": errors, "seconds": seconds, "hist": hist,
            "p50": quantile(hist, 0.5), "p99": quantile(hist, 0.99),
        } for (cls, method), calls, errors, hist, seconds in rows]
