"""The client side on the I/O thread: one peer per endpoint, its requests and their replies.

Reliability rules (see ENGINEERING.md A4-A9):

* Never one DEALER connected to many peers (it would round-robin): each
  endpoint is a :class:`Peer` with its own sockets.
* Liveness never shares a backed-up stream. Each peer gets two DEALERs: the
  data connection (requests, replies) has no ZMTP heartbeat, since a peer whose
  input is stopped by back-pressure cannot see PINGs (a busy server would be
  declared dead, and libzmq asserts when such a connection is dropped); the
  control connection carries ZMTP heartbeats (answered by libzmq without the
  GIL) and leases. It opens once the data connection is up, so a first request
  does not wait for it; control messages sent before it is up wait (a few).
  A dead, frozen or partitioned peer is dropped within
  ``heartbeat_timeout`` and every request pending on it fails: with
  :class:`PeerLost` when it was sent (it may have run), :class:`PeerUnavailable`
  when it cannot have run. A request never waits forever on a dead peer.
* A request to a peer that is not connected waits in an outbox until the
  handshake succeeds, at most ``connect_timeout``. A refused connection or a
  failed handshake fails it at once.
* Replies are matched by request id; late or unknown replies are dropped.
* Batches (1.4): see :mod:`transport._peer`; small requests queued for a peer
  that announced batches go in one message when the loop's turn ends.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import zmq

from transport._errors import FrameError, PeerLost, PeerUnavailable, RequestTimeout
from transport._framing import BATCH, BATCH_MAX, split_batch, split_frames
from transport._log import log
from transport._loop import Loop
from transport._sockets import (
    EVENTS,
    POLLIN,
    POLLOUT,
    Counters,
    DealerRecipe,
    close_monitored,
    connection_event,
    monitor_events,
    recv,
    send,
)
from transport._peer import Peer, Pending, PendingReply, deliver_batch, probe, take_batch
from transport._window import Window

__all__ = ["CTL_GRACE", "Dealers", "Peer", "Pending"]  # Peer: from transport._peer

CTL_GRACE = 0.1  # s: after the control connection goes, the data connection's own event may come
_CTL_OUTBOX = 16  # control messages held until the control connection is up (leases: a few)
_POLL_BOTH = int(zmq.POLLIN) | POLLOUT


class Dealers:
    """Every peer of one node, driven by its I/O thread."""

    def __init__(self, loop: Loop, recipe: DealerRecipe, counters: Counters, window: Window, warn: Callable[..., None]) -> None:
        self.loop = loop
        self.recipe = recipe
        self.counters = counters
        self.window = window
        self.warn = warn
        self.secure = recipe.keys is not None
        self.peers: dict[str, Peer] = {}
        self.requests: dict[int, Pending] = {}
        self.due: set[Peer] = set()  # peers whose outbox goes out when the loop's turn ends
        loop.flushers.append(self.flush)

    # ------------------------------------------------------------ commands
    def start(self, req: Pending) -> None:
        """Send a request (or queue it until the peer is up)."""
        endpoint = req.endpoint
        peer = self.peers.get(endpoint)
        if peer is not None and peer.batch and peer.up and isinstance(req, PendingReply):  # a lane call (no deadline):
            frames, req.frames, rid = req.frames, None, req.rid  # the steps below and _send's batch branch, inlined
            self.requests[rid] = req
            peer.pending.add(rid)
            peer.outbox.append((rid, frames))
            self._flush_outbox(peer) if len(peer.outbox) >= BATCH_MAX else self.due.add(peer)
            return
        if not req.future.set_running_or_notify_cancel():
            if self.window.size:
                self.window.free(endpoint)
            return
        try:
            peer = self.peer(endpoint)
        except PeerUnavailable as exc:
            if self.window.size:
                self.window.free(endpoint)
            req.future.set_exception(exc)
            return
        frames, req.frames = req.frames, None  # the outbox holds them, not the record
        rid = req.rid
        self.requests[rid] = req
        peer.pending.add(rid)
        if req.deadline is not None:
            self.loop.call_at(req.deadline, self._deadline, rid)
        if peer.up:
            self._send(peer, frames, rid)
        else:
            peer.outbox.append((rid, frames))

    def send_oneway(self, endpoint: str, frames: list) -> None:
        peer = self.peer(endpoint)
        if peer.up:
            self._send(peer, frames)
        else:
            peer.outbox.append((0, frames))

    def send_control(self, endpoint: str, frames: list) -> None:
        self._ctl_send(self.peer(endpoint), frames)

    def forget(self, endpoint: str) -> None:
        """Close an idle peer's connections (a later request connects again)."""
        peer = self.peers.get(endpoint)
        if peer is not None and not peer.pending and not peer.outbox:
            del self.peers[endpoint]
            self._close_sockets(peer)

    # ------------------------------------------------------------- peers
    def peer(self, endpoint: str) -> Peer:
        """The peer for ``endpoint``, connecting it first (raises PeerUnavailable for a bad address)."""
        peer = self.peers.get(endpoint)
        if peer is not None:
            return peer
        peer = Peer(endpoint, time.monotonic() + self.recipe.connect_timeout)
        # data: no heartbeat (see the module's docstring); the control connection opens once the
        # data connection is up (_open_ctl), after the requests waiting for it went out
        peer.sock, peer.mon = self.recipe.connect(endpoint, heartbeat=False, immediate=True)
        self.peers[endpoint] = peer
        loop = self.loop
        loop.add(peer.sock, lambda mask: self._on_data(peer, mask))
        loop.add(peer.mon, lambda _mask: self._on_monitor(peer))
        loop.call_at(peer.connect_deadline, self._connect_deadline, peer)
        return peer

    def _open_ctl(self, peer: Peer) -> None:
        """The control connection (heartbeats, a short queue), opened once the data connection is up:
        a first request then goes out without waiting for a second socket pair and handshake, and
        the control connection's handshake runs while the peer works on it."""
        if peer.ctl is not None or self.peers.get(peer.endpoint) is not peer:
            return
        try:
            peer.ctl, peer.ctl_mon = self.recipe.connect(peer.endpoint, heartbeat=True, immediate=True, sndhwm=100)
        except PeerUnavailable:  # (the data connection to the same address is up: cannot happen)
            return
        self.loop.add(peer.ctl, lambda _mask: self._drain_ctl(peer))
        self.loop.add(peer.ctl_mon, lambda _mask: self._on_ctl_monitor(peer))

    def _send(self, peer: Peer, frames: list, rid: int = 0) -> None:
        if peer.batch:  # held until the turn ends: what queues up meanwhile goes in one batch
            outbox = peer.outbox
            outbox.append((rid, frames))
            if len(outbox) >= BATCH_MAX:
                self._flush_outbox(peer)
            else:
                self.due.add(peer)
            return
        if peer.outbox:  # keep order behind the backlog
            peer.outbox.append((rid, frames))
            return
        if not self._try_send(peer, frames, (rid,)):
            peer.outbox.append((rid, frames))
            self._poll_out(peer)

    def flush(self) -> None:
        """The loop's turn ends: send the outboxes that wait for it."""
        while self.due:
            peer = self.due.pop()
            if peer.up and peer.sock is not None and self.peers.get(peer.endpoint) is peer:
                self._flush_outbox(peer)

    def _poll_out(self, peer: Peer) -> None:
        if not peer.pollout:
            peer.pollout = True
            self.loop.modify(peer.sock, _POLL_BOTH)

    def _try_send(self, peer: Peer, frames: list, rids: tuple | list) -> bool:
        """Send now; False if the peer's queue is full (the caller keeps the frames)."""
        try:
            send(peer.sock, frames, 3)
            self.counters.sent += sum(map(len, frames))
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            for rid in rids:
                self.fail(rid, PeerUnavailable(peer.endpoint, f"send failed: {exc}"))
        return True

    def _flush_outbox(self, peer: Peer) -> None:
        outbox = peer.outbox
        requests = self.requests
        limit = peer.batch
        n = len(outbox)
        i = 0
        while i < n:
            rid, frames = outbox[i]
            if rid and rid not in requests:  # timed out or cancelled meanwhile
                i += 1
                continue
            if limit and len(frames) == 3:
                frames, rids, j = take_batch(outbox, i, requests, limit)
            else:
                rids, j = (rid,), i + 1
            if not self._try_send(peer, frames, rids):
                del outbox[:i]
                self._poll_out(peer)
                return
            i = j
        outbox.clear()
        if peer.pollout:
            peer.pollout = False
            self.loop.modify(peer.sock, zmq.POLLIN)

    def _ctl_send(self, peer: Peer, frames: list) -> None:
        """A one-way message on the control connection; held until it is up (a few), dropped if it
        is full or the peer was dropped."""
        if self.peers.get(peer.endpoint) is not peer:  # dropped or forgotten (its sockets closed)
            return
        if not peer.ctl_up:
            if len(peer.ctl_outbox) < _CTL_OUTBOX:
                peer.ctl_outbox.append(frames)
            return
        try:
            send(peer.ctl, frames, 4)
        except zmq.ZMQError:
            log.debug("%s: control message dropped (connection full or down)", peer.endpoint)

    # ----------------------------------------------------------- requests
    def fail(self, rid: int, exc: Exception) -> None:
        req = self.finish(rid)
        if req is not None and not req.future.done():
            req.future.set_exception(exc)

    def finish(self, rid: int, defer: str | None = None) -> Pending | None:  # defer: whose slot the caller frees
        req = self.requests.pop(rid, None)
        if req is not None:
            peer = self.peers.get(req.endpoint)
            if peer is not None:
                peer.pending.discard(rid)
            if self.window.size and req.endpoint != defer:
                self.window.free(req.endpoint)
        return req

    def _deadline(self, rid: int) -> None:
        req = self.requests.get(rid)
        if req is not None and req.deadline is not None and req.deadline <= time.monotonic():
            self.fail(rid, RequestTimeout(f"{req.endpoint}: no reply within the deadline"))

    # ------------------------------------------------------ socket events
    def _on_data(self, peer: Peer, mask: int) -> None:
        if mask & POLLOUT:
            self._flush_outbox(peer)
        if mask & POLLIN:
            self._on_reply(peer)

    def _on_reply(self, peer: Peer) -> None:
        sock = peer.sock
        counters = self.counters
        for _ in range(256):
            if not sock.get(EVENTS) & POLLIN:  # cheaper than an Again exception
                return
            frames = recv(sock, 3) if not peer.probe else probe(peer)
            counters.received += sum(map(len, frames))
            try:
                header, body, buffers = split_frames(frames)
                if header["op"] == BATCH:
                    items = split_batch(body)
                else:
                    self._reply(peer, header, body, buffers)
                    continue
            except FrameError as exc:
                self.warn("badreply", "dropping malformed reply from %s: %s", peer.endpoint, exc)
                continue
            deliver_batch(self, peer, items)

    def _reply(self, peer: Peer, header: dict, body: Any, buffers: list, defer: str | None = None) -> bool:
        """Complete the request a reply answers; True if its window slot is left to the caller (``defer``)."""
        rid = header.get("re")
        if "more" in header and self._part(rid, header, body, buffers):
            return False  # one part of a reply in parts: the request stays pending
        req = self.finish(rid, defer) if isinstance(rid, int) else None
        if req is None:
            log.debug("dropping late or unknown reply %r from %s", rid, peer.endpoint)
            return False
        if not req.future.done():
            req.future.set_result((header, body, buffers))
        return req.endpoint == defer and self.window.size > 0

    def _part(self, rid: Any, header: dict, body: Any, buffers: list) -> bool:
        """A reply with ``more``: hand it to its request's ``on_part`` (a :class:`PartsFuture`), if it has one."""
        req = self.requests.get(rid) if isinstance(rid, int) else None
        on_part = getattr(req.future, "on_part", None) if req is not None else None
        if on_part is None:
            return False
        try:
            on_part((header, body, buffers))
        except Exception:  # a handler must not break the I/O thread
            log.exception("reply part handler failed")
        return True

    def _drain_ctl(self, peer: Peer) -> None:
        """The control connection gets no replies: drain whatever comes."""
        while peer.ctl is not None:
            try:
                peer.ctl.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    def _on_monitor(self, peer: Peer) -> None:
        for msg in monitor_events(peer.mon):
            if msg["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                peer.up = True
                peer.batch, peer.probe = 0, True  # (a new connection: its metadata may differ)
                peer.pollout = True  # (the outbox's flush sets the poll mask)
                self._flush_outbox(peer)
                peer.came_up()  # (before the control connection's two sockets open)
                self._open_ctl(peer)
                continue
            exc = connection_event(peer, msg, self.secure)
            if exc is not None:
                self._drop_after_replies(peer, exc)
                return

    def _on_ctl_monitor(self, peer: Peer) -> None:
        """The control connection's events: once it was up, losing it means the peer is gone."""
        for msg in monitor_events(peer.ctl_mon):
            event = msg["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                peer.ctl_up = True
                waiting, peer.ctl_outbox = peer.ctl_outbox, []
                for frames in waiting:
                    self._ctl_send(peer, frames)
            elif event == zmq.EVENT_DISCONNECTED and peer.ctl_up:
                # A server that closes closes the data connection too, and that one's last
                # replies must be read first: give its own event a moment. A frozen or cut-off
                # peer (heartbeat timeout here, silence there) is dropped when the moment ends.
                peer.ctl_up = False
                peer.ctl_lost = time.monotonic()
                self.loop.call_at(peer.ctl_lost + CTL_GRACE, self._ctl_grace_over, peer)
                return

    def _ctl_grace_over(self, peer: Peer) -> None:
        if self.peers.get(peer.endpoint) is peer and peer.ctl_lost:
            self._drop_after_replies(peer, PeerUnavailable(peer.endpoint, "connection lost (peer died, froze or network down)"))

    def _connect_deadline(self, peer: Peer) -> None:
        if self.peers.get(peer.endpoint) is peer and not peer.up:
            self.drop(peer, PeerUnavailable(peer.endpoint, f"no connection within {self.recipe.connect_timeout:g} s"))

    # ------------------------------------------------------------ dropping
    def _drop_after_replies(self, peer: Peer, exc: Exception) -> None:
        # replies that arrived before the connection went are already queued: deliver
        # them first (the monitor socket may be polled before the peer's)
        try:
            self._on_reply(peer)
        except Exception:
            log.debug("draining %s before dropping it failed", peer.endpoint, exc_info=True)
        self.drop(peer, exc)

    def drop(self, peer: Peer, exc: Exception) -> None:
        """Fail what waits on ``peer``: requests never handed to libzmq cannot have run;
        those that were sent may have (:class:`PeerLost`, unless ``exc`` says more)."""
        if self.peers.get(peer.endpoint) is peer:
            del self.peers[peer.endpoint]
        unsent = {rid for rid, _ in peer.outbox}
        lost = exc
        if type(exc) is PeerUnavailable:
            lost = PeerLost(peer.endpoint, f"{exc.reason}; the request was sent and may have run")
        for rid in list(peer.pending):
            if rid not in unsent:
                self.fail(rid, lost)
        for rid in unsent:
            self.fail(rid, exc)
        peer.outbox.clear()
        self._close_sockets(peer)

    def _close_sockets(self, peer: Peer, linger: int = 0) -> None:
        for s in (peer.sock, peer.mon, peer.ctl, peer.ctl_mon):
            if s is not None:
                self.loop.remove(s)
        if peer.sock is not None and peer.mon is not None:
            close_monitored(peer.sock, peer.mon, linger)
        if peer.ctl is not None and peer.ctl_mon is not None:
            close_monitored(peer.ctl, peer.ctl_mon)
        peer.ctl = peer.ctl_mon = None
        peer.ctl_outbox = []

    def teardown(self, exc: Exception) -> None:
        """Fail every request with ``exc`` and close every peer."""
        for rid in list(self.requests):
            self.fail(rid, exc)
        for peer in list(self.peers.values()):
            self._close_sockets(peer, linger=200)  # let last one-way messages (bye) out
        self.peers.clear()
