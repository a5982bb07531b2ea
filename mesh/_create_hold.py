"""Pipelined creations held for their creator's loop (the loop hold of ``mesh._create_many``).

A loop of ``to_dist()`` calls over H servers gives each server short runs (``mesh.client._spread``:
a twentieth of the average fill, for evenness), one run per server per round of H runs. Sent as
they came, a batch at 50 servers held a few dozen objects, and a request's fixed cost (both sides'
I/O threads, the server's worker wake-up, libzmq's threads) was paid per few dozen objects: more
per creation the more servers. So while the loop goes on, a batch waits for its server's next runs:
when the I/O thread comes to send it and a loop is under way (other objects were batched since
its first, and another server has objects not sent yet: a loop over servers; from then on until the
loop ends), it is held open,
and it goes

- once it is full (``MAX_ITEMS``, from the creating thread, as any batch),
- once no object was batched for :data:`QUIET` ticks of :data:`TICK` (the loop ended or paused),
- after :data:`MAX_HOLD` at most,
- or at its first use, or before a call to its server (as any held batch, ``mesh._create_many``),

not with its server's next answer (the rule of a batch held while the server's previous one is out):
a server that answers fast would otherwise get each run as a request of its own again.

A lone creation, creations paced slower than the I/O thread's turns, a loop to one server (of one
class or several: its batch fills to ``MAX_ITEMS`` by itself), and detached objects go as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["MAX_HOLD", "QUIET", "TICK", "LoopHold"]

TICK = 0.01  # s: how often the I/O thread looks whether the loop goes on, while batches are held for it
QUIET = 2  # ticks in a row without an object batched: the loop ended (or paused), the held batches go
MAX_HOLD = 0.5  # s: a batch is held for a loop this long at most


class LoopHold:
    """The loop hold over ``mesh._create_many``'s state: ``lock`` (its ``_lock``), ``unsent``
    (address -> batches not sent yet), ``made`` (a one-item list: objects batched so far), and its
    ``take(batch)`` (caller holds ``lock``) and ``send(batch)``."""

    def __init__(
        self,
        lock: Any,
        unsent: dict[str, list],
        made: list[int],
        take: Callable[[Any], None],
        send: Callable[[Any], None],
    ) -> None:
        self.lock = lock
        self.unsent = unsent
        self.made = made
        self.take = take
        self.send = send
        self.node: Any = None  # the node whose I/O thread runs the sweep now, or None
        self.last = 0  # ``made`` at the sweep before
        self.quiet = 0  # sweeps in a row that saw nothing batched
        self.tick = self.sweep  # (one bound method: remove_timer compares by identity)

    def hold(self, batch: Any) -> bool:
        """Caller (the I/O thread about to send ``batch``) holds ``lock``: hold it while its creator's
        loop goes on; True if held (``batch.held`` set; it stays in ``unsent``, where :meth:`sweep`,
        a use or a call to its server find it)."""
        if batch.detached:
            return False
        node = batch.client.node
        if node.closed:
            return False
        if self.node is not node:  # no loop seen under way (the sweep runs while one is)
            if self.made[0] - batch.made <= len(batch.ids):
                return False  # and none shows now: no object but its own was batched since it opened
            if not any(address != batch.address and batches for address, batches in self.unsent.items()):
                return False  # a loop to this server alone (of one class or several): its batch fills
                # by itself, and its objects reach it as soon as before (reached by name, over HTTP...)
        batch.held = True
        batch.since = time.monotonic()
        if self.node is not node:
            self.node, self.last, self.quiet = node, self.made[0], 0
            node.add_timer(TICK, self.tick)
        return True

    def sweep(self) -> None:
        """Every TICK while batches are held for a loop (the I/O thread): send those whose loop
        ended (nothing batched for QUIET sweeps) or that were held MAX_HOLD; stop when none is left."""
        now = time.monotonic()
        with self.lock:
            made = self.made[0]
            self.quiet = self.quiet + 1 if made == self.last else 0
            self.last = made
            quiet = self.quiet >= QUIET  # (one tick without a creation may be the creator descheduled)
            due, left = [], False
            for batches in self.unsent.values():
                for batch in batches:
                    if batch.since and not batch.sent:
                        if quiet or now - batch.since >= MAX_HOLD:
                            due.append(batch)
                        else:
                            left = True
            for batch in due:
                self.take(batch)
            if not left and self.node is not None:
                self.node.remove_timer(self.tick)
                self.node = None
        for batch in due:
            self.send(batch)

    def reset(self) -> None:
        """Caller holds ``lock``: nothing is held any more (the session ended): the sweep stops."""
        if self.node is not None and not self.node.closed:
            self.node.remove_timer(self.tick)
        self.node = None
