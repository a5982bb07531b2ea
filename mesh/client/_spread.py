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

Finding the least filled server is a look over all of them (O(H)), and with runs of a few
objects at 50 servers it was one look per few placements. So a look plans a whole *round*: the
next H runs, chosen as one-by-one looks would choose them (a heap of the fills, each run adding
its length to its server's fill: a server that is far behind takes several runs of the round, as
it would have). The next runs then come off the plan (:meth:`Runs.planned`) without looking at
the table; a new look is made when the plan is used up, or dropped when a run's server fails
(:meth:`Runs.drop` takes it out of the plan), and a server that appears later is in the next
round's plan (H runs later at most).
"""

from __future__ import annotations

import heapq
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

    __slots__ = ("address", "left", "lock", "placed", "plan")

    def __init__(self, placed: dict[str, int]) -> None:
        self.address: str | None = None
        self.left = 0
        self.lock = threading.Lock()
        self.placed = placed
        self.plan: list[tuple[str, int]] = []  # the round's next runs, (address, length), last first

    def take(self) -> str | None:
        """The next placement of the current run (counted), or None (start one with :meth:`start`)."""
        with self.lock:
            if not self.left:
                return None
            self.left -= 1
            address = self.address
            self.placed[address] = self.placed.get(address, 0) + 1  # type: ignore[index]
            return address

    def planned(self) -> str | None:
        """Open the next run of the round's plan and take its first place, or None (no plan left)."""
        with self.lock:
            if not self.plan:
                return None
            address, length = self.plan.pop()
            self.address, self.left = address, length - 1
            self.placed[address] = self.placed.get(address, 0) + 1
            return address

    def start(self, live: list[Any], base: Mapping[str, int]) -> str:
        """Plan a round of runs over ``live`` (``ServerInfo``s, not empty), open its first run (on
        the least filled server) and take its first place.

        ``base``: the part of this process's placements per server that the server's last answer
        already counts (at most: the server may not have read them all).
        """
        with self.lock:
            placed = self.placed
            heap: list[tuple[float, str, int]] = []
            total = 0.0
            for s in live:
                cap = s.capacity if s.capacity > 0 else 1
                mine = placed.get(s.address, 0)
                # the server's count lags behind our creations still on their way (batches not yet sent or
                # read when it answered the ping): it holds at least what we placed there
                fill = max(s.agents + mine - base.get(s.address, 0), mine) / cap
                total += fill
                heap.append((fill, s.address, cap))
            heapq.heapify(heap)
            count = len(live)
            plan = []
            for _ in range(count):  # what H looks in a row would pick, each run filling its server
                fill, address, cap = heap[0]
                length = run_length(total / count, cap)  # (the average as that look would see it)
                plan.append((address, length))
                total += length / cap
                heapq.heapreplace(heap, (fill + length / cap, address, cap))
            plan.reverse()
            address, length = plan.pop()
            self.plan = plan
            self.address = address
            self.left = length - 1
            placed[address] = placed.get(address, 0) + 1
            return address

    def drop(self, address: str | None = None) -> None:
        """End the current run (if it is on ``address``, when given) and take ``address`` out of the
        plan (None: the whole plan goes)."""
        with self.lock:
            if address is None or address == self.address:
                self.address, self.left = None, 0
            if address is None:
                self.plan = []
            elif any(a == address for a, _ in self.plan):
                self.plan = [p for p in self.plan if p[0] != address]
