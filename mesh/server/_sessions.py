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

    def touch(self, sess: str) -> None:
        self.seen[sess] = time.monotonic()

    def bye(self, sess: str) -> None:
        self.seen.pop(sess, None)

    def expired(self) -> list[str]:
        """The sessions not heard from for ``lease_ttl`` seconds, now forgotten."""
        cutoff = time.monotonic() - self.lease_ttl
        gone = [sess for sess, seen in self.seen.items() if seen < cutoff]
        for sess in gone:
            del self.seen[sess]
        return gone

    def __len__(self) -> int:
        return len(self.seen)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.seen))
