"""A DEALER owned by one user thread, for blocking calls to one peer (no hop through the I/O thread).

Same socket recipe, monitor reading and reply matching as the I/O thread's
peers (:mod:`transport._sockets`); it differs in who drives it: the calling
thread polls its own socket and monitor while it waits for the reply.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import zmq

from transport._errors import FrameError, NodeClosed, PeerLost, PeerUnavailable, RequestTimeout
from transport._framing import ONE_MAX, SIGNATURE, split_frames, split_one
from transport._sockets import (
    EVENTS,
    POLLIN,
    Counters,
    DealerRecipe,
    Link,
    close_monitored,
    connection_event,
    monitor_events,
    recv,
    send_blocking,
)

__all__ = ["SLICE", "Direct"]

_poll = zmq.zmq_poll
_monotonic = time.monotonic
_send = zmq.backend.Socket.send
_recv = zmq.backend.Socket.recv
_get = zmq.backend.Socket.get
RCVMORE = int(zmq.RCVMORE)
SNDMORE = int(zmq.SNDMORE)

SLICE = 100  # ms: how often a waiting call checks that the node is still open
FRESH = 0.005  # s: call_fast reads the monitor before sending unless a reply came this recently


class Direct(Link):
    """One thread's connection to one peer; ``lock`` is held around :meth:`call`."""

    __slots__ = ("recipe", "counters", "is_closed", "lock", "closed", "sock", "mon", "poller", "_items", "_mon_items",
                 "_fresh", "one", "__weakref__")

    def __init__(self, recipe: DealerRecipe, counters: Counters, endpoint: str, is_closed: Callable[[], bool]) -> None:
        super().__init__(endpoint)
        self.recipe = recipe
        self.counters = counters
        self.is_closed = is_closed  # the node's state
        self.lock = threading.Lock()
        self.closed = False
        # blocking sends: no ZMQ_IMMEDIATE (see DealerRecipe.connect); heartbeats detect a frozen peer
        self.sock, self.mon = recipe.connect(endpoint, heartbeat=True, immediate=False)
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)
        self.poller.register(self.mon, zmq.POLLIN)
        self.sock.rcvtimeo = SLICE  # call_fast's blocking wait checks the monitor and the node each slice
        self._items = [(self.sock, POLLIN), (self.mon, POLLIN)]  # for zmq_poll itself (no Poller per call)
        self._mon_items = [(self.mon, POLLIN)]
        self._fresh = -FRESH  # monotonic time of the last reply read by call_fast
        self.one = True  # call_fast sends one-frame requests (PROTOCOL.md) until the peer refuses one

    def call(self, header: dict, frames: list, timeout: float | None) -> tuple:
        """Send ``frames`` and wait for the reply to ``header["id"]``: ``(header, body, buffers)``."""
        if self.closed:
            raise NodeClosed("the mesh node was closed")
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        # What happened while this socket sat idle (a heartbeat timeout, a reconnect) is
        # learnt before sending: a stale "disconnected" must not fail a call sent afterwards.
        if self.mon.get(EVENTS) & POLLIN:  # cheaper than an Again exception on every call
            self._on_monitor(sent=False)
        if not self.up:
            self._wait_up(now + self.recipe.connect_timeout)
        send_blocking(self.sock, frames)
        self.counters.sent += sum(map(len, frames))
        rid = header["id"]
        while True:
            wait = SLICE if deadline is None else max(0, min(SLICE, int((deadline - time.monotonic()) * 1000) + 1))
            events = dict(self.poller.poll(wait))
            # the socket before the monitor: a reply that came just before the connection
            # went must not be lost to the disconnect event
            if self.sock in events:
                reply = self._read_reply(rid)
                if reply is not None:
                    return reply
            if self.mon in events:
                self._on_monitor(sent=True)
            if self.is_closed():
                self.close()
                raise NodeClosed("the mesh node was closed")
            if deadline is not None and time.monotonic() >= deadline:
                raise RequestTimeout(f"{self.endpoint}: no reply within the deadline")

    def call_fast(self, rid: int, frames: list, expect: bytes, timeout: float | None) -> Any:
        """:meth:`call` for a request whose ``ok`` reply header is known: ``expect``, the packed header
        (:func:`transport._templates.ok_header`). Returns the reply's body frame when the reply is that
        ``ok`` with no buffers (nothing parsed), else the split reply ``(header, body, buffers)``.

        Same failures as :meth:`call`, and the same order of checks; only the waiting is leaner
        (a blocking ``recv`` without a deadline, else ``zmq_poll`` on a fixed list: no ``Poller``, no dict).
        """
        if self.closed:
            raise NodeClosed("the mesh node was closed")
        now = _monotonic()
        # Connection events of the idle time are read before sending (see call); right after a
        # reply (within FRESH) the connection was just seen up, and the check is skipped: an
        # event in that window is read after the send, as one a moment later would be.
        if (now - self._fresh > FRESH or not self.up) and _poll(self._mon_items, 0):
            self._on_monitor(sent=False)
        if not self.up:
            self._wait_up(now + self.recipe.connect_timeout)
        sock = self.sock
        counters = self.counters
        one = len(frames) == 3 and timeout is None and self.one
        if one:  # [signature, header, body] as one frame (pack_one, inlined); its reply may come so too
            first, second, third = frames
            first = SIGNATURE + len(second).to_bytes(2, "big") + second + third
            one = len(first) <= ONE_MAX
        if one:
            _send(sock, first, 0, True)
            counters.sent += len(first)
            expect_one = SIGNATURE + len(expect).to_bytes(2, "big") + expect  # its plain ok reply in one frame
            n = len(expect_one)
        elif len(frames) == 3:
            first, second, third = frames
            _send(sock, first, SNDMORE, True)
            _send(sock, second, SNDMORE, True)
            _send(sock, third, 0, True)
            counters.sent += len(first) + len(second) + len(third)
        else:
            send_blocking(sock, frames)
            counters.sent += sum(map(len, frames))
        if timeout is not None:
            return self._wait_polling(rid, expect, now + timeout)
        # No deadline: block in recv on the data socket alone (RCVTIMEO: one slice), as a plain
        # pyzmq client waits. zmq_poll over the socket and its monitor costs six poll(2) calls
        # per call (a first pass, then ZMQ_EVENTS of each socket before and after the sleep);
        # the monitor is read between slices instead, so a connection lost while the request
        # is out fails the call within a slice (PeerLost), as a closed node does.
        while True:
            try:
                first = _recv(sock, 0, True)  # (as bytes: a Frame costs 3x; see below for what follows)
            except zmq.Again:  # a slice without a reply
                first = None
            if first is None:
                if _poll(self._mon_items, 0):
                    self._on_monitor(sent=True)
                if self.is_closed():
                    self.close()
                    raise NodeClosed("the mesh node was closed")
                continue
            if one and len(first) > n and first[:n] == expect_one:  # the expected reply, in one frame
                counters.received += len(first)
                self._fresh = _monotonic()
                return first[n:]  # (a one-frame message is all there is of it: nothing to read after it)
            if first == SIGNATURE:  # this protocol's message: a header and a body follow it (PROTOCOL.md:
                # fewer than 3 frames is malformed), so the header is read as bytes too (a server that
                # breaks this only garbles its own replies: they are matched by id, and dropped)
                second = _recv(sock, 0, True)
                frame = _recv(sock, 0, False)  # the body as a Frame: whether buffers follow
                third = frame.bytes
                if not frame.more and second == expect:  # the expected reply, a plain ok
                    counters.received += len(first) + len(second) + len(third)
                    self._fresh = _monotonic()
                    return third
                reply = [first, second, third]
                more = frame.more
            else:  # one frame, another major version, or garbage: the socket says whether parts follow
                reply = [first]
                more = _get(sock, RCVMORE)
            while more:
                frame = _recv(sock, 0, False)
                reply.append(frame)
                more = frame.more
            counters.received += sum(map(len, reply))
            if len(reply) == 1 and (parts := split_one(first)) is not None:
                reply = [SIGNATURE, *parts]
            found = self._match(reply, rid)
            if found is not None:
                self._fresh = _monotonic()
                return found
            if one and _refused(reply):  # a server without one-frame messages: the request never ran
                self.one = one = False  # (it answered "malformed"): three frames on this socket from now on
                first, second, third = frames
                _send(sock, first, SNDMORE, True)
                _send(sock, second, SNDMORE, True)
                _send(sock, third, 0, True)
                counters.sent += len(first) + len(second) + len(third)

    def _wait_polling(self, rid: int, expect: bytes, deadline: float) -> Any:
        """:meth:`call_fast`'s wait for a call with a deadline: the socket and its monitor in one poll."""
        sock = self.sock
        items = self._items
        while True:
            wait = max(0, min(SLICE, int((deadline - time.monotonic()) * 1000) + 1))
            events = _poll(items, wait)
            if events:
                for ready, _mask in events:  # the socket comes first in items: a reply before a disconnect
                    if ready is sock:
                        while True:
                            try:
                                reply = recv(sock, 3)
                            except zmq.Again:
                                break
                            self.counters.received += sum(map(len, reply))
                            if len(reply) == 3 and reply[1] == expect and reply[0] == SIGNATURE:
                                self._fresh = _monotonic()
                                return reply[2]
                            found = self._match(reply, rid)
                            if found is not None:
                                self._fresh = _monotonic()
                                return found
                    else:
                        self._on_monitor(sent=True)
            if self.is_closed():
                self.close()
                raise NodeClosed("the mesh node was closed")
            if time.monotonic() >= deadline:
                raise RequestTimeout(f"{self.endpoint}: no reply within the deadline")

    @staticmethod
    def _match(reply: list, rid: int) -> tuple | None:
        try:
            rh, body, bufs = split_frames(reply)
        except FrameError:
            return None
        return (rh, body, bufs) if rh.get("re") == rid else None

    def _read_reply(self, rid: int) -> tuple | None:
        """Read what arrived; the reply to ``rid`` if it is there (late replies to earlier calls are dropped)."""
        while True:
            try:
                reply = recv(self.sock, 3)
            except zmq.Again:
                return None
            self.counters.received += sum(map(len, reply))
            try:
                rh, body, bufs = split_frames(reply)
            except FrameError:
                continue
            if rh.get("re") == rid:
                return rh, body, bufs

    def _wait_up(self, deadline: float) -> None:
        while not self.up:
            wait = int((deadline - time.monotonic()) * 1000)
            if wait <= 0:
                self.close()
                raise PeerUnavailable(self.endpoint, f"no connection within {self.recipe.connect_timeout:g} s")
            if self.mon.poll(min(wait, SLICE)):
                self._on_monitor(sent=False)
            if self.is_closed():
                self.close()
                raise NodeClosed("the mesh node was closed")

    def _on_monitor(self, sent: bool) -> None:
        """Process pending connection events; ``sent``: a request is out on this socket.

        A lost connection fails the call only when a request is out (then with
        :class:`PeerLost`: it may have run); otherwise the socket waits for libzmq's
        reconnection before sending.
        """
        for msg in monitor_events(self.mon):
            if msg["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.handshake_succeeded()
                continue
            if msg["event"] == zmq.EVENT_DISCONNECTED and self.up:
                self.up = False
                if sent:
                    self.close()
                    raise PeerLost(self.endpoint, "connection lost (peer died, froze or network down) "
                                   "while the request was out: it may have run")
                continue
            exc = connection_event(self, msg, self.recipe.keys is not None)
            if exc is not None:
                self.close()
                raise exc

    def __del__(self) -> None:  # the owning thread ended: its thread-local sockets go too
        try:
            self.close()
        except Exception:
            pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        close_monitored(self.sock, self.mon)


def _refused(reply: list) -> bool:
    """Whether ``reply`` is the ``protocol`` error of a request that could not be read (``re: nil``):
    what a server that predates one-frame messages answers one with."""
    try:
        header = split_frames(reply)[0]
    except FrameError:
        return False
    return header.get("op") == "err" and header.get("kind") == "protocol" and header.get("re") is None
