"""A DEALER owned by one asyncio event loop, for requests issued on that loop (no I/O-thread hop).

The I/O thread's peers cost an awaited call two thread crossings (a command and a pipe wake to
send, ``call_soon_threadsafe`` to wake the loop). A *lane* is a DEALER per (event loop, peer): the
loop's thread sends on it and reads replies with ``loop.add_reader(sock.FD)``. ZeroMQ's FD is
edge-triggered: the reader reads until ``EVENTS`` shows nothing left (asked with a ``zmq_poll`` of
timeout 0, which re-arms the FD as ``EAGAIN`` would, for less), and ``EVENTS`` is checked after
every send (a send may consume the edge of a reply that came meanwhile). Who drives the socket:

* the loop, while it runs (its reader callbacks);
* the loop's own thread, when it blocks in :meth:`LaneFuture.result` (``transport._lane_drive``);
* nobody, once the loop stopped or closed: another thread that reads the future then (or adds a
  done-callback) *falls back*: a request still in the outbox is sent through the I/O thread
  instead (it never left), and one that was sent is asked again with the ``refetch`` request the
  caller supplied (the mesh: a ``result`` fetch by task id). A lane never fails a call for that.

Same socket recipe as the other drivers (CURVE, heartbeats, high-water marks), with a context of
its own: the node's ``ctx.term()`` never waits for a loop. A request waits in the outbox until the
handshake succeeded (at most ``connect_timeout``: then :class:`PeerUnavailable`; it cannot have
run), and while ``window`` requests are out. A connection lost with requests out fails them with
:class:`PeerLost` and closes the lane (the next request makes a new one).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import deque
from typing import Any, Callable

import zmq

from transport._errors import FrameError, PeerLost, PeerUnavailable, RequestTimeout
from transport._framing import SIGNATURE, pack_header, split_frames
from transport._lane_drive import drive
from transport._lane_future import SLICE, LaneFuture, Refetch
from transport._templates import ok_rid
from transport._sockets import (NOBLOCK as _NOBLOCK, NOBLOCK_MORE as _NOBLOCK_MORE, POLLIN, Link, _recv as _recv_part,
                                _send as _send_part, close_monitored, connection_event, monitor_events, send)

__all__ = ["BURST", "LANE_WINDOW", "SLICE", "Lane", "LaneFuture"]

LANE_WINDOW = 1000  # requests out on one lane (its socket has heartbeats: never let it back up)
BURST = 16  # requests issued in one loop turn from which the I/O thread sends them (it works in parallel)
_poll = zmq.zmq_poll  # ([(sock, POLLIN)], 0): readable? (reads EVENTS, so it re-arms the FD: ~1.3 µs; sock.get(EVENTS)
# makes an enum first, ~1.5 µs, one system call fewer; a failed recv raises zmq.Again: NOTES-aiolat5.md)

class Lane(Link):
    """One event loop's connection to one peer. Its socket is used only by the loop's thread."""

    __slots__ = ("node", "recipe", "counters", "loop_ref", "ident", "pid", "lock", "drive_lock", "closed",
                 "sock", "mon", "poller", "poll_in", "waits", "inline", "polled", "pending", "outbox", "handoffs", "out", "window", "up_timer", "flush_due", "delegated",
                 "__weakref__")

    def __init__(self, node: Any, recipe: Any, endpoint: str, loop: Any) -> None:
        super().__init__(endpoint)
        self.node = node
        self.recipe = recipe  # the node's, on the lanes' own zmq context
        self.counters = node._counters
        self.loop_ref = weakref.ref(loop)
        self.ident = threading.get_ident()
        self.pid = os.getpid()
        self.lock = threading.Lock()  # pending, outbox and the fall-back decision
        self.drive_lock = threading.Lock()  # held while a thread polls the socket itself
        self.closed = False
        self.window = min(node.window or LANE_WINDOW, LANE_WINDOW)
        self.pending: dict[int, LaneFuture] = {}
        self.outbox: deque[tuple[LaneFuture, list]] = deque()
        self.handoffs: deque[tuple[LaneFuture, float | None]] = deque()  # from other threads, not yet adopted
        self.out = 0  # requests sent and not answered
        self.flush_due = False  # a flush is scheduled on the loop
        self.delegated = 0  # requests of a burst handed to the I/O thread, not answered yet
        self.sock, self.mon = self.recipe.connect(endpoint, heartbeat=True, immediate=False)
        self.poller: zmq.Poller | None = None
        self.poll_in = [(self.sock, POLLIN)]
        self.waits: Any = None  # the select.poll of an await's wait in place (transport._lane_drive.wait_here)
        self.inline = False  # the reader may resume one awaiting Task right there (transport._lane_waiter)
        # EVENTS read since the last recv (after a send), a read scheduled if it said POLLIN: the edge is
        # re-armed, the reader need not ask again (an awaiting Task it resumed sent its next call)
        self.polled = False
        loop.add_reader(self.sock.FD, self.readable)
        loop.add_reader(self.mon.FD, self.on_monitor)
        loop.call_soon(self.on_monitor)  # what came before the readers were added gave no edge
        self.up_timer = loop.call_later(self.recipe.connect_timeout, self._connect_expired)

    # -- state -------------------------------------------------------------
    def driven(self) -> bool:
        """True while the lane's loop runs (and so reads its replies)."""
        loop = self.loop_ref()
        return loop is not None and loop.is_running() and not self.closed

    def bursting(self) -> bool:
        """True while the I/O thread sends a burst of this lane's calls and nothing waits on the lane's
        own socket: a later call may go straight to the I/O thread (behind the burst, in order)."""
        with self.lock:
            return bool(self.delegated) and not self.out and not self.outbox

    # -- sending (the loop's thread) -----------------------------------------
    def request(self, header: dict, body: bytes, buffers: list | tuple, refetch: Refetch | None,
                timeout: float | None, packed: bytes | None = None) -> LaneFuture:
        """Send (or queue) a request; ``packed``: ``header`` already packed (a template's bytes)."""
        fut = LaneFuture(self, header["id"], (header, body, buffers), refetch)
        return self.submit(fut, [SIGNATURE, packed or pack_header(header), body, *buffers], timeout)

    def submit(self, fut: LaneFuture, frames: list, timeout: float | None = None) -> LaneFuture:
        """Send (or queue) ``fut``'s request, its ``frames`` made by the caller (the loop's thread)."""
        loop = self.loop_ref()
        burst = False
        with self.lock:
            self.pending[fut.rid] = fut
            if not self.out and self.up and not self.outbox and not self.delegated:  # idle: at once (a round trip)
                if self._send(fut, frames) and loop is not None:
                    if _poll(self.poll_in, 0):
                        loop.call_soon(self.readable)  # the send may have taken a reply's edge
                    self.polled = True
                frames = None
            else:
                self.outbox.append((fut, frames))
                burst = bool(self.delegated) or len(self.outbox) >= BURST
        if burst:  # a burst: the I/O thread sends it while this loop still issues it, once the
            if self.out and not self.delegated:  # lane's own calls are answered (they may be here already)
                self.readable()
            if not self.out:
                self._delegate()
        elif frames is not None and not self.flush_due and loop is not None:
            # sent once this loop turn's callbacks issued theirs, back to back (libzmq then wakes
            # its own thread once for them, not once per call)
            self.flush_due = True
            loop.call_soon(self.flush)
        if timeout is not None and loop is not None:
            loop.call_later(timeout, self._expire, fut)
        return fut

    def flush(self) -> None:  # the loop's thread
        self.flush_due = False
        if not self.outbox or self.closed:
            return
        if self.delegated or len(self.outbox) >= BURST:
            if not self.out:  # (else once the lane's own calls are answered: they must not be overtaken)
                self._delegate()
            return
        with self.lock:
            self._flush()

    def _delegate(self) -> None:
        """A burst: the I/O thread sends it (in order, on its own connection), the loop is free meanwhile."""
        with self.lock:
            items = list(self.outbox)
            self.outbox.clear()
            for fut, _ in items:
                self.pending.pop(fut.rid, None)
                fut.fell_back = True  # its reply comes through the I/O thread
            self.delegated += len(items)
        for fut, _ in items:
            header, body, buffers = fut.resend
            try:
                other = self.node.request(self.endpoint, header, body, buffers)
            except BaseException as exc:  # noqa: BLE001 - the node closed meanwhile
                self._undelegate()
                fut.set_exception(exc)
                continue
            other.add_done_callback(lambda o, f=fut: (self._undelegate(), f._copy(o)))

    def _undelegate(self) -> None:  # any thread
        with self.lock:
            self.delegated -= 1
            resume = not self.delegated and self.outbox
        loop = self.loop_ref()
        if resume and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.flush)  # what waited behind the burst

    def request_threadsafe(self, header: dict, body: bytes, buffers: list | tuple, refetch: Refetch | None,
                           timeout: float | None) -> LaneFuture:
        """:meth:`request` from another thread: handed to the loop, sent behind what it sent before
        (the loop stopped first: the future falls back to the I/O thread)."""
        fut = LaneFuture(self, header["id"], (header, body, buffers), refetch)
        fut.handed = time.monotonic()
        loop = self.loop_ref()
        with self.lock:
            first = not self.handoffs
            self.handoffs.append((fut, timeout))
        try:
            if loop is None:
                raise RuntimeError("the loop is gone")
            if first:
                loop.call_soon_threadsafe(self.adopt_all)
        except RuntimeError:
            fut.fall_back()
        return fut

    def adopt_all(self) -> None:
        """Send what other threads handed over (the loop's thread, or its thread driving the lane)."""
        while True:
            with self.lock:
                if not self.handoffs:
                    return
                fut, timeout = self.handoffs.popleft()
            self._adopt(fut, timeout)

    def _adopt(self, fut: LaneFuture, timeout: float | None) -> None:  # the loop's thread
        header, body, buffers = fut.resend
        frames = [SIGNATURE, pack_header(header), body, *buffers]
        with self.lock:
            if fut.fell_back or fut.done():
                return
            closed = self.closed
            if not closed:
                self.pending[fut.rid] = fut
                self.outbox.append((fut, frames))
                self._flush()
        if closed:
            fut.fall_back()
        elif timeout is not None:
            self._later(timeout, lambda: self._expire(fut))

    def _send(self, fut: LaneFuture, frames: list) -> bool:  # under self.lock
        try:
            if len(frames) == 3:  # (no buffers, the common case: unrolled; only the first part can fail)
                sock, (first, second, third) = self.sock, frames
                _send_part(sock, first, _NOBLOCK_MORE, True)
                _send_part(sock, second, _NOBLOCK_MORE, True)
                _send_part(sock, third, _NOBLOCK, True)
                self.counters.sent += len(first) + len(second) + len(third)
            else:
                send(self.sock, frames, 3)
                self.counters.sent += sum(map(len, frames))
        except zmq.Again:
            self.outbox.appendleft((fut, frames))
            return False
        fut.sent = True
        self.out += 1
        return True

    def _flush(self) -> None:  # under self.lock
        sent = False
        while self.outbox and self.up and self.out < self.window:
            fut, frames = self.outbox.popleft()
            if not fut.done() and not fut.fell_back:
                if not self._send(fut, frames):
                    break
                sent = True
        if sent:  # the sends may have taken a reply's edge: read it soon
            loop = self.loop_ref()
            if loop is not None and not loop.is_closed():
                if _poll(self.poll_in, 0):
                    loop.call_soon(self.readable)
                self.polled = True

    def unqueue(self, fut: LaneFuture) -> None:  # under self.lock
        self.pending.pop(fut.rid, None)
        self.outbox = deque(e for e in self.outbox if e[0] is not fut)
        if self.handoffs:
            self.handoffs = deque(e for e in self.handoffs if e[0] is not fut)

    # -- receiving (the loop's thread, or the thread that drives) -------------
    def readable(self) -> None:
        if self.closed:
            return
        sock, counters, pending = self.sock, self.counters, self.pending
        # one Task resumed here per call of the reader, the others in the next loop turn: an await
        # chain whose replies keep coming must not keep the loop from its other callbacks
        self.inline = True
        while True:  # until EVENTS says nothing is left (that re-arms the FD's edge, as EAGAIN would)
            try:  # (a reply of three parts read without a loop, as Direct.call_fast reads it)
                frame = _recv_part(sock, _NOBLOCK, False)
            except zmq.Again:  # a wake-up with nothing to read
                break
            self.polled = False
            reply = [frame.bytes]
            if frame.more:
                frame = _recv_part(sock, 0, False)
                reply.append(frame.bytes)
                if frame.more:
                    frame = _recv_part(sock, 0, False)
                    reply.append(frame.bytes)
                    while frame.more:  # buffers (zmq.Frame, as recv() gives them)
                        frame = _recv_part(sock, 0, False)
                        reply.append(frame)
            counters.received += sum(map(len, reply))
            rid = ok_rid(reply[1]) if len(reply) == 3 and reply[0] == SIGNATURE else None
            if rid is not None:  # a plain ok (most replies): known by its bytes, kept as its body
                value = reply[2]
            else:
                try:
                    rh, body, bufs = split_frames(reply)
                    rid, value = rh.get("re"), (rh, body, bufs)
                except FrameError:  # (malformed: dropped)
                    rid = None
            with self.lock:
                fut = pending.pop(rid, None)
                if fut is not None and fut.sent:
                    self.out -= 1
            if fut is not None:
                fut._complete(value, None)  # (set_result, one call fewer)
            if self.closed or self.polled or not _poll(self.poll_in, 0):
                break
        self.inline = False
        if self.outbox and not self.closed:  # the window let more go
            self.flush()

    def on_monitor(self) -> None:
        if self.closed:
            return
        try:
            for msg in monitor_events(self.mon):
                if msg["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:  # (the timer dropped: a handle holds its loop)
                    self.handshake_succeeded()
                    self.up_timer = self.up_timer.cancel() if self.up_timer is not None else None
                    with self.lock:
                        self._flush()
                    continue
                if msg["event"] == zmq.EVENT_DISCONNECTED and self.up:
                    self.up = False
                    if self.out:
                        self.fail(PeerLost(self.endpoint, "connection lost (peer died, froze or network down) "
                                           "while requests were out: they may have run"))
                        return
                    self.up_timer = self._later(self.recipe.connect_timeout, self._connect_expired)
                    continue
                exc = connection_event(self, msg, self.recipe.keys is not None)
                if exc is not None:
                    self.fail(exc)
                    return
        finally:
            if not self.closed and _poll(self.poll_in, 0):
                self.readable()

    def drive(self, done: Callable[[], bool], end: float | None) -> None:
        """Poll the socket on this (the loop's) thread until ``done()``, or raise FutureTimeout at ``end``."""
        drive(self, done, end)

    # -- failures ------------------------------------------------------------
    def _up_by(self) -> float:
        timer = self.up_timer
        return timer.when() if timer is not None and hasattr(timer, "when") else float("inf")

    def _connect_expired(self) -> None:
        self.up_timer = None
        if not self.up and not self.closed:
            if self.pending:
                self.fail(PeerUnavailable(self.endpoint, f"no connection within {self.recipe.connect_timeout:g} s"))
            else:
                self.close()

    def _expire(self, fut: LaneFuture) -> None:
        with self.lock:
            if self.pending.pop(fut.rid, None) is None:
                return
            if fut.sent:
                self.out -= 1
            else:
                self.unqueue(fut)
        fut.set_exception(RequestTimeout(f"{self.endpoint}: no reply within the deadline"))

    def fail(self, exc: Exception) -> None:
        """Fail every request of the lane and close it (the loop's thread)."""
        with self.lock:
            futs = list(self.pending.values())
            self.pending.clear()
            self.outbox.clear()
            self.out = 0
        self.close()
        for fut in futs:
            if isinstance(exc, PeerLost) and not fut.sent:
                fut.set_exception(PeerUnavailable(self.endpoint, "connection lost before the request was sent"))
            else:
                fut.set_exception(exc)

    def _later(self, delay: float, fn: Callable[[], None]) -> Any:
        loop = self.loop_ref()
        return loop.call_later(delay, fn) if loop is not None and not loop.is_closed() else None

    def close(self) -> None:
        """Close the sockets (the loop's thread, or any thread once the loop closed)."""
        if self.closed:
            return
        self.closed = True
        loop = self.loop_ref()
        if loop is not None and not loop.is_closed():
            for fd in (self.sock.FD, self.mon.FD):
                try:
                    loop.remove_reader(fd)
                except Exception:  # noqa: BLE001 - a loop that is closing
                    pass
        self.up_timer = self.up_timer.cancel() if self.up_timer is not None else None  # (cancel() is None)
        close_monitored(self.sock, self.mon)
        with self.lock:
            futs = list(self.pending.values())
        for fut in futs:  # a lane closed under them (its loop went): the I/O thread takes them over
            fut.fall_back()

    def __del__(self) -> None:
        try:
            if not self.closed and self.pid == os.getpid():
                self.closed = True
                close_monitored(self.sock, self.mon)
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass
