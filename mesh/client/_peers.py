"""``PeerBook``: what the client knows of each server and object, under one lock.

- a server's message-size limit (from its ``create`` reply), checked before sending;
- the leases this process keeps on servers where it owns objects (renew interval, last renewal);
- per object, the async calls not yet answered: a sync call to an object with some in flight goes
  behind them on the I/O thread's connection (call order per caller), else on the thread's own
  socket (the fast path). The threaded async lane (``mesh.client._async_lane``) counts its calls
  apart, so that a reply costs the I/O thread no lock: its calls started are counted by the
  issuing threads under the lock, its calls ended by the I/O thread alone, without it (a call
  that ends on another thread is counted there by the I/O thread, soon); an object is busy while
  more started than ended. Objects with none in flight are swept out once the table doubles
  (under the lock, by the I/O thread: then no count moves).
"""

from __future__ import annotations

import threading
import time
from typing import Any

__all__ = ["LEASE_INTERVAL", "PeerBook"]

_get_ident = threading.get_ident

_LEAN_MAX = 64 * 1024  # transport.BUFFER_THRESHOLD: bigger bodies always take the checked path
LEASE_INTERVAL = 5.0  # seconds between lease renewals; servers expire a lease after lease_ttl (30 s)


class PeerBook:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._limits: dict[str, int] = {}  # address -> the server's max message size
        self._leases: dict[str, list[float]] = {}  # address -> [renew every, last renewal]
        self._inflight: dict[str, int] = {}  # object id -> async calls not yet answered
        self._lane_started: dict[str, int] = {}  # object id -> lane calls started (issuing threads, locked)
        self._lane_ended: dict[str, int] = {}  # object id -> lane calls ended (the I/O thread alone)
        self._sweep_at = _SWEEP_MIN
        self.node: Any = None  # the Node whose I/O thread counts the lane calls ended (set by the client)
        # the largest body a fast lane sends without the size check of the general path: 64 KiB, or
        # less once a server with a smaller limit is known (then bigger bodies take the checked path)
        self.lean_max = _LEAN_MAX

    # -- size limits --------------------------------------------------------
    def limit(self, address: str, default: int) -> int:
        return self._limits.get(address, default)

    def set_limit(self, address: str, limit: int) -> None:
        with self._lock:
            self._limits[address] = limit
            if 0 < limit < self.lean_max:
                self.lean_max = limit

    # -- leases -------------------------------------------------------------
    def own(self, address: str, lease_ttl: float | None = None) -> None:
        """Keep a lease on ``address``: objects created there live while this process does."""
        every = LEASE_INTERVAL if not lease_ttl else min(LEASE_INTERVAL, lease_ttl / 4)
        lease = self._leases.get(address)
        if lease is not None and lease[0] <= every:  # (every async call asks: held already, no lock)
            return
        with self._lock:
            lease = self._leases.get(address)
            if lease is None:
                self._leases[address] = [every, time.monotonic()]
            else:
                lease[0] = min(lease[0], every)

    def leases_due(self, now: float) -> list[str]:
        """The servers whose lease is due for renewal at ``now`` (marked renewed)."""
        due = []
        with self._lock:
            for address, lease in self._leases.items():
                if now - lease[1] >= lease[0]:
                    lease[1] = now
                    due.append(address)
        return due

    def leased(self) -> list[str]:
        with self._lock:
            return list(self._leases)

    def drop_lease(self, address: str) -> None:
        with self._lock:
            self._leases.pop(address, None)

    # -- async calls in flight, per object ----------------------------------
    def busy(self, object_id: str) -> bool:
        if self._inflight.get(object_id):
            return True
        ended = self._lane_ended.get(object_id, 0)  # read first: counts only grow (until swept at equality)
        return self._lane_started.get(object_id, 0) > ended

    def call_started(self, object_id: str) -> None:
        with self._lock:
            self._inflight[object_id] = self._inflight.get(object_id, 0) + 1

    def call_ended(self, object_id: str) -> None:
        with self._lock:
            n = self._inflight.get(object_id, 1) - 1
            if n > 0:
                self._inflight[object_id] = n
            else:
                self._inflight.pop(object_id, None)

    # -- lane calls in flight (mesh.client._async_lane) ----------------------------
    def lane_started(self, object_id: str) -> None:
        with self._lock:
            self._lane_started[object_id] = self._lane_started.get(object_id, 0) + 1

    def lane_ended(self, object_id: str) -> None:
        """A lane call to ``object_id`` ended: counted now on the I/O thread, else handed to it."""
        node = self.node
        if node is None or _get_ident() == node.io_ident:  # (_lane_ended_io, inlined: once per reply)
            ended = self._lane_ended
            ended[object_id] = ended.get(object_id, 0) + 1
            if len(ended) >= self._sweep_at:
                self._sweep()
        else:  # (a call failed on the issuing thread: the node is closed, or the send raised)
            node.call_soon(self._lane_ended_io, object_id)

    def _lane_ended_io(self, object_id: str) -> None:
        ended = self._lane_ended
        ended[object_id] = ended.get(object_id, 0) + 1
        if len(ended) >= self._sweep_at:
            self._sweep()

    def _sweep(self) -> None:
        """Forget the objects with no lane call in flight (the I/O thread; under the lock, no count moves)."""
        with self._lock:
            started, ended = self._lane_started, self._lane_ended
            for object_id, n in list(ended.items()):
                if started.get(object_id, 0) == n:
                    del ended[object_id]
                    started.pop(object_id, None)
            self._sweep_at = max(_SWEEP_MIN, 2 * len(ended))


_SWEEP_MIN = 1024  # objects in the lane's table before the first sweep
