"""Runs of placements: consecutive ``to_dist()`` calls without a host go to one server a few at a time.

Spreading a loop of creations one by one over H servers gives each server one object per H
creations: its pipelined creations then trickle out one to a request, and nothing batches
(``create_many``). Here a placement opens a *run* on the least filled server and the next
creations take the same server until the run is used up; only then is the least filled server
looked for again (a ``min`` over the servers once per run, not per object).

A run is short enough to keep the spread even at every point: its length is a twentieth of the
average fill (objects per unit of capacity, as the servers report it plus this process's
placements since), in objects of the chosen server's capacity, at least 1 and at most
:data:`MAX_RUN`. So the first creations of a process are spread one by one (a short loop still
lands on every server, as API.md says), later ones in runs of up to ``MAX_RUN``, and no server is
more than a twentieth of the average (or one object) off the even share. Each run starts on
the least filled server, so the long-run balance stays exactly even; a server that appears later
starts empty and takes the runs until it has caught up.

A run ends early when its server is marked dead or drops out of the live table
(:func:`Runs.drop`), or when the table is replaced.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["MAX_RUN", "SHARE", "Runs", "run_length"]

MAX_RUN = 256  # objects in one run at most (as many as one create_many carries)
SHARE = 0.05  # a run is at most this part of the average fill (the goal is within 10% of even)


def run_length(mean_fill: float, capacity: int) -> int:
    """Objects in a run on a server of ``capacity`` when the servers hold ``mean_fill`` per unit."""
    return max(1, min(MAX_RUN, int(SHARE * mean_fill * max(capacity, 1))))


class Runs:
    """The current run of one process's placements.

    Its own lock (a plain one: a placement within a run takes nothing else) guards the run and
    the count of placements per server, ``placed``, that it updates.
    """

    __slots__ = ("address", "left", "lock", "placed")

    def __init__(self, placed: dict[str, int]) -> None:
        self.address: str | None = None
        self.left = 0
        self.lock = threading.Lock()
        self.placed = placed

    def take(self) -> str | None:
        """The next placement of the current run (counted), or None (start one with :meth:`start`)."""
        with self.lock:
            if not self.left:
                return None
            self.left -= 1
            address = self.address
            self.placed[address] = self.placed.get(address, 0) + 1  # type: ignore[index]
            return address

    def start(self, live: list[Any], base: Mapping[str, int]) -> str:
        """Open a run on the least filled of ``live`` (``ServerInfo``s, not empty) and take its first place.

        ``base``: the part of this process's placements per server that the server's last answer
        already counts (at most: the server may not have read them all).
        """
        with self.lock:
            placed = self.placed
            best = None
            best_key: tuple[float, str] | None = None
            total = 0.0
            for s in live:
                cap = s.capacity if s.capacity > 0 else 1
                mine = placed.get(s.address, 0)
                # the server's count lags behind our creations still on their way (batches not yet sent or
                # read when it answered the ping): it holds at least what we placed there
                fill = max(s.agents + mine - base.get(s.address, 0), mine) / cap
                total += fill
                key = (fill, s.address)
                if best_key is None or key < best_key:
                    best, best_key = s, key
            assert best is not None
            self.address = best.address
            self.left = run_length(total / len(live), best.capacity) - 1
            placed[best.address] = placed.get(best.address, 0) + 1
            return best.address

    def drop(self, address: str | None = None) -> None:
        """End the current run (if it is on ``address``, when given)."""
        with self.lock:
            if address is None or address == self.address:
                self.address, self.left = None, 0
