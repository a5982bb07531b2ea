"""One remote endpoint of the client side (:class:`Peer`), and the two batch helpers of its data
connection: gathering queued requests into one ``batch`` message, and reading from the first reply
of a connection whether the peer reads batches (its ``X-Mesh-Batch`` ZMTP metadata).

Batches (protocol 1.4): once a peer announced ``X-Mesh-Batch: <bytes>``, small requests (no
buffer frames) wait in its outbox until the I/O loop's turn ends, then go as one ``batch``
message (a lone request alone, so nothing waits when nothing queues). A batch is sent whole or
not at all; its requests stay separate (ids, deadlines, failures). Batched replies are split
and matched one by one.
"""

from __future__ import annotations

from typing import Any, Callable

import zmq

from transport._errors import TransportError
from transport._future import ReplyFuture
from transport._loop import Command

from transport._framing import BATCH_BYTES, BATCH_HEADER, BATCH_ITEM_MAX, BATCH_MAX, BATCH_PROPERTY, SIGNATURE, pack_batch
from transport._sockets import Link

__all__ = ["Peer", "Pending", "PendingReply", "deliver_batch", "probe", "take_batch"]


class Peer(Link):
    """One remote endpoint: its data and control connections, what waits to go, what is out."""

    __slots__ = ("sock", "mon", "outbox", "pending", "connect_deadline", "ctl", "ctl_mon", "ctl_up", "ctl_outbox", "ctl_lost",
                 "batch", "probe", "pollout", "up_hooks")

    def __init__(self, endpoint: str, deadline: float) -> None:
        super().__init__(endpoint)
        self.sock: zmq.Socket | None = None
        self.mon: zmq.Socket | None = None
        # The control connection: heartbeats and leases, never behind queued calls.
        self.ctl: zmq.Socket | None = None
        self.ctl_mon: zmq.Socket | None = None
        self.ctl_up = False
        self.ctl_outbox: list[list] = []  # control messages sent before it was up
        self.ctl_lost = 0.0  # when the control connection went (0: it did not)
        self.outbox: list[tuple[int, list[Any]]] = []  # (request id or 0 for one-way, frames)
        self.pending: set[int] = set()
        self.connect_deadline = deadline
        self.batch = 0  # bytes of a batch the peer reads (its handshake says); 0: send single messages
        self.probe = True  # the next reply's metadata tells whether the peer reads batches
        self.pollout = False  # the data socket is polled for POLLOUT (the outbox waits for room)
        self.up_hooks: list[Callable[[], None]] = []  # run once its handshake succeeds (Node.when_connected)

    def came_up(self) -> None:
        """Its handshake succeeded and its outbox went out: run what waited for that."""
        hooks, self.up_hooks = self.up_hooks, []
        for fn in hooks:
            fn()



class Pending(Command):
    """A request: submitted as a command, then kept until its reply, failure or deadline.

    ``dealers``: the :class:`transport._dealers.Dealers` that sends it.
    """

    __slots__ = ("dealers", "rid", "endpoint", "frames", "future", "deadline")

    def __init__(self, dealers: Any, rid: int, endpoint: str, frames: list | None, future: ReplyFuture, deadline: float | None) -> None:
        self.dealers = dealers
        self.rid = rid
        self.endpoint = endpoint
        self.frames = frames
        self.future = future
        self.deadline = deadline

    def run(self) -> None:
        self.dealers.start(self)

    def failed(self, exc: Exception) -> None:
        if not self.future.done():
            if self.dealers.window.size and self.rid not in self.dealers.requests:
                self.dealers.window.free(self.endpoint)
            self.future.set_exception(TransportError(f"cannot send: {exc}"))

    def abort(self, exc: Exception) -> None:
        if not self.future.done():
            self.future.set_exception(exc)

class PendingReply(ReplyFuture, Command):
    """A request that is its own future: one object per call instead of a :class:`Pending` and a
    :class:`ReplyFuture` (what :meth:`transport.Node.request_frames` takes; a subclass may add to
    the future's completion). Its ``future`` is itself, so the I/O thread reads it as a
    :class:`Pending`. Filled in by :meth:`~transport.Node.request_frames`."""

    __slots__ = ("dealers", "rid", "endpoint", "frames", "deadline")

    @property
    def future(self) -> PendingReply:
        return self

    run = Pending.run
    failed = Pending.failed
    abort = Pending.abort

    def reply(self, header: dict, body: Any) -> None:
        """The reply without buffer frames that ends this request (I/O thread; a subclass may
        take it without the ``(header, body, [])`` tuple :meth:`set_result` gets)."""
        if not self.done():
            self.set_result((header, body, []))


def take_batch(outbox: list, i: int, requests: dict, limit: int) -> tuple[list, list | tuple, int]:
    """The message to send for ``outbox[i]`` (a request without buffer frames) and the queued ones
    after it: ``(frames, request ids in it, index after the last one taken)``. Entries whose
    request ended meanwhile (timed out, cancelled) are skipped; a lone request stays a single message.
    """
    rid, frames = outbox[i]
    size = len(frames[1]) + len(frames[2])
    if size > BATCH_ITEM_MAX:
        return frames, (rid,), i + 1
    parts = [frames[1], frames[2]]
    rids = [rid]
    n = len(outbox)
    j = i + 1
    while j < n and len(rids) < BATCH_MAX:
        rid2, more = outbox[j]
        if rid2 and rid2 not in requests:
            j += 1
            continue
        if len(more) != 3:
            break
        grow = len(more[1]) + len(more[2])
        size += grow + 8
        if grow > BATCH_ITEM_MAX or size > limit:
            break
        parts.append(more[1])
        parts.append(more[2])
        rids.append(rid2)
        j += 1
    if len(rids) == 1:
        return frames, rids, j
    return [SIGNATURE, BATCH_HEADER, pack_batch(parts)], rids, j


def probe(peer: Peer) -> list:
    """Receive a reply, reading the connection's metadata: does the peer read batches?"""
    sock = peer.sock
    first = sock.recv(zmq.NOBLOCK, copy=False)
    peer.probe = False
    try:
        cap = int(first.get(BATCH_PROPERTY))
    except (zmq.ZMQError, ValueError, TypeError):  # not announced (a 1.3 peer), or garbage
        cap = 0
    peer.batch = min(cap, BATCH_BYTES) if cap >= 2 * BATCH_ITEM_MAX else 0
    frames: list[Any] = [first.bytes]
    while sock.get(zmq.RCVMORE):
        frames.append(sock.recv(0, copy=len(frames) < 3))
    return frames


def deliver_batch(dealers: Any, peer: Peer, items: list) -> None:
    """The replies of one ``batch`` from ``peer`` (``split_batch``'s items): each completes its
    request, as :meth:`Dealers._reply` does, and the batch's window slots are freed under one lock.

    A plain reply (no ``more``) to a request pending on this peer is matched here without a call
    per reply; anything else (an unknown or late id, a request of another peer, a part) takes
    ``Dealers._reply``.
    """
    requests = dealers.requests
    pending = peer.pending
    endpoint = peer.endpoint
    window = dealers.window
    freed = 0
    try:
        for item in items:
            if type(item) is not tuple:
                dealers.warn("badreply", "dropping malformed reply from %s: %s", endpoint, item)
                continue
            header, body = item
            rid = header.get("re")
            req = requests.get(rid) if type(rid) is int else None
            if req is None or req.endpoint != endpoint or "more" in header:
                freed += dealers._reply(peer, header, body, [], endpoint)
                continue
            del requests[rid]
            pending.discard(rid)
            freed += 1
            if isinstance(req, PendingReply):
                req.reply(header, body)
            elif not req.future.done():
                req.future.set_result((header, body, []))
    finally:
        if freed and window.size:
            window.free(endpoint, freed)
