"""Client sessions: a lease renewed by every request (and op ``lease``), ended by ``bye`` or silence."""

from __future__ import annotations

import time
from collections.abc import Iterator

__all__ = ["Sessions"]


class Sessions:
    """Client session -> when it was last heard from (monotonic). I/O thread only."""

    def __init__(self, lease_ttl: float = 30.0) -> None:
        self.lease_ttl = lease_ttl
        self.seen: dict[str, float] = {}
        self._checked = time.monotonic()  # the last call of expired()

    def touch(self, sess: str) -> None:
        self.seen[sess] = time.monotonic()

    def bye(self, sess: str) -> None:
        self.seen.pop(sess, None)

    def expired(self) -> list[str]:
        """The sessions not heard from for ``lease_ttl`` seconds, now forgotten; none when this server
        itself was not running for half a lease or more since the last check (stopped, swapped out,
        starved on a loaded machine, its I/O thread held up): the renewals its clients sent meanwhile
        may still be unread in its sockets, and they are read before the next check."""
        now = time.monotonic()
        last, self._checked = self._checked, now
        if now - last >= self.lease_ttl / 2:
            return []
        cutoff = now - self.lease_ttl
        gone = [sess for sess, seen in self.seen.items() if seen < cutoff]
        for sess in gone:
            del self.seen[sess]
        return gone

    def __len__(self) -> int:
        return len(self.seen)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.seen))
