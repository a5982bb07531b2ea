"""Token streams, producer side: the state of one stream (its items, its readers), see ``mesh.server._streams``."""

from __future__ import annotations

import threading
from typing import Any, Callable

import msgpack

from mesh._core.wire import Entry

__all__ = ["StreamState"]


class _Sub:
    __slots__ = ("reply", "ref", "sess", "sent", "acked", "chain", "inline")

    def __init__(
        self, reply: Callable[[Entry], None], ref: str, sess: str | None, start: int, chain: str | None = None, inline: bool = False,
    ) -> None:
        self.inline = inline  # it reads batches of plain items in the inline form (stream_items.pack_inline)
        self.reply = reply
        self.ref = ref
        self.sess = sess
        self.chain = chain  # the reader's call chain: let into the producer's object while it is paused
        self.sent = start  # items pushed to it
        self.acked = start  # items it consumed


class StreamState:
    """One stream: its items, its readers, and whether its generator should stop."""

    def __init__(self, task: str) -> None:
        self.task = task
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.items: list[tuple[bytes, list[bytes]] | None] = []  # None: dropped (byte budget)
        self.cum = [0]  # cum[i]: bytes of items[:i]
        self.base = 0  # the first item still kept
        self.end: Entry | None = None  # how it ended
        self.subs: dict[str, _Sub] = {}
        self.mark = 0  # the furthest any reader got (paces a generator while nobody is subscribed)
        self.low = 0  # slowest(), kept up to date under ``cond`` (relow) for the producer's check
        self.nbytes = 0  # bytes of the items kept
        self.stopping = False
        self.flushing = False  # a push is scheduled on the I/O thread
        self.pushed = 0  # scheduled pushes done (sent)
        self.framed = 0  # items with buffer frames (none: batches skip looking for them)
        self.plain = True  # every item so far is a plain scalar (batches may go inline)
        self.loop: Any = None  # an async generator's loop, task, and its waiter for room
        self.atask: Any = None
        self.waiter: Any = None
        self.dropped = False
        self.host: Any = None  # (actor, submit) of the running call: a pause lets its readers' chains in
        self.pack = msgpack.Packer(use_bin_type=True).pack  # one generator puts at a time: its own packer (packb makes one per item)

    def slowest(self) -> int:
        return min(s.acked for s in self.subs.values()) if self.subs else self.mark

    def relow(self) -> None:
        """Readers changed (caller holds ``cond``)."""
        self.low = max(self.base, self.slowest())

    def full(self, window: int, window_bytes: int) -> bool:
        low = self.low
        n = len(self.items)
        return n - low >= window or (n > low and self.cum[n] - self.cum[low] >= window_bytes)

    def wake(self) -> None:
        """Readers changed, or the producer must stop: caller holds ``cond``."""
        self.relow()
        self.cond.notify_all()
        waiter, loop = self.waiter, self.loop
        if waiter is not None and loop is not None:
            self.waiter = None
            try:
                loop.call_soon_threadsafe(_set_done, waiter)
            except RuntimeError:  # the loop closed
                pass


def _set_done(fut: Any) -> None:
    if not fut.done():
        fut.set_result(None)
