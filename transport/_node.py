"""The I/O thread: one per process, owner of every ZeroMQ socket.

ZeroMQ sockets are not thread-safe, so a single thread owns them all: the
ROUTERs that servers bind, one DEALER per remote peer (never one DEALER
connected to many peers: it would round-robin), their monitor sockets and the
ZAP handler. Other threads hand it work through a queue and wake it with a
byte on a pipe; results come back as ``concurrent.futures.Future`` objects.

Reliability rules (see ENGINEERING.md A4-A9):

* Liveness never shares a backed-up stream. Each peer gets two DEALERs: the
  data connection (requests, replies) has no ZMTP heartbeat, since a peer whose
  input is stopped by back-pressure cannot see PINGs (a busy server would be
  declared dead, and libzmq asserts when such a connection is dropped); the
  control connection carries ZMTP heartbeats (answered by libzmq without the
  GIL) and leases. A dead, frozen or partitioned peer is dropped within
  ``heartbeat_timeout`` and every request pending on it fails: with
  :class:`PeerLost` when it was sent (it may have run), :class:`PeerUnavailable`
  when it cannot have run. A request never waits forever on a dead peer.
* Back-pressure instead of failure: at most ``window`` requests are in flight
  per peer; past it the issuing thread waits.
* Servers hold at most ``_BACKLOG_MAX`` replies for a client that does not read.
* Warnings from the I/O thread are rate-limited and written by another thread.
* A request to a peer that is not connected waits in an outbox until the
  handshake succeeds, at most ``connect_timeout``. A refused connection or a
  failed handshake fails it at once.
* Replies are matched by request id; late or unknown replies are dropped.
* ROUTERs use ``ROUTER_MANDATORY`` and non-blocking sends: a reply to a
  vanished client is logged and dropped, never blocks the thread.
"""

from __future__ import annotations

import collections
import errno
import heapq
import itertools
import logging
import os
import queue
import struct
import threading
import time
import weakref
from typing import Any, Callable

import msgpack
import zmq

from transport._future import ReplyFuture as Future
from transport._errors import (
    FrameError,
    NodeClosed,
    PeerAuthFailed,
    PeerLost,
    PeerUnavailable,
    RequestTimeout,
    TransportError,
    VersionMismatch,
)
from transport._framing import SIGNATURE, pack_header, split_frames
from transport._security import ZAP_ENDPOINT, Keys

__all__ = [
    "Node",
    "NodeClosed",
    "PeerAuthFailed",
    "PeerLost",
    "PeerUnavailable",
    "RequestTimeout",
    "Router",
    "TransportError",
]

log = logging.getLogger("transport")

_MONITOR_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_CONNECT_RETRIED
)


_MONITOR_EVENT = struct.Struct("=HI")
# plain ints: pyzmq's enum members cost ~0.5 us per | on the hot path
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)
_NOBLOCK_MORE = _NOBLOCK | _SNDMORE
_RCVMORE = int(zmq.RCVMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_HWM = 10000
# Replies held (in Python) for one client whose libzmq queue is full; past it the client is not
# reading and its replies are dropped (it lost them anyway when it went). Bounds a slow reader.
_BACKLOG_MAX = 10000
_BACKLOG_POLL_MIN = 5  # ms: retry held replies soon, backing off to the max while none go out
_BACKLOG_POLL_MAX = 200
# Requests in flight per peer before the issuing thread waits (back-pressure, never failure).
DEFAULT_WINDOW = 10000
_CTL_GRACE = 0.1  # s: after the control connection goes, the data connection's own event may come
_WINDOW_STALL = 1.0  # s without any reply from that peer: let one more through (never deadlock)
_ROUTER_LINGER = 2000  # ms
# A refused or unreachable connection is retried (every 100 ms) this many times before the
# requests waiting on it fail: fast for a server that is down, tolerant of a link that just came back.
_CONNECT_TRIES = 3
_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH,
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
)  # messages queued per peer in libzmq before our own backlog takes over


class _Peer:
    __slots__ = (
        "endpoint", "sock", "mon", "up", "outbox", "pending", "connect_deadline", "retries", "hs_failures",
        "ctl", "ctl_mon", "ctl_up", "ctl_outbox", "ctl_lost",
    )

    def __init__(self, endpoint: str, sock: zmq.Socket, mon: zmq.Socket, deadline: float) -> None:
        self.endpoint = endpoint
        self.sock = sock
        self.mon = mon
        # The control connection: heartbeats and leases, never behind queued calls (see _peer).
        self.ctl: zmq.Socket | None = None
        self.ctl_mon: zmq.Socket | None = None
        self.ctl_up = False
        self.ctl_outbox: list[list] = []  # control messages sent before it was up (a few)
        self.ctl_lost = 0.0  # when the control connection went (0: it did not)
        self.up = False
        self.outbox: list[tuple[int, list[Any]]] = []
        self.pending: set[int] = set()
        self.connect_deadline = deadline
        self.retries = 0
        self.hs_failures = 0


_WARN_BURST = 5  # warnings of one kind written per period; the rest are counted, then summarised
_WARN_PERIOD = 10.0  # s


class _Warnings:
    """Warnings raised on the I/O thread: rate-limited per kind, and written by another thread.

    The I/O thread only appends to a bounded deque: a handler that blocks (stderr on
    a pipe nobody reads) stalls the writer thread, never the sockets. Past
    ``_WARN_BURST`` of a kind in ``_WARN_PERIOD`` seconds, one summary line says how
    many were suppressed.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.log = logger
        self.counts: dict[str, list] = {}  # kind -> [period start, written, suppressed]
        self.lock = threading.Lock()
        self.queue: collections.deque = collections.deque(maxlen=1000)
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None

    def __call__(self, kind: str, msg: str, *args: Any) -> None:
        if not self.log.isEnabledFor(logging.WARNING):
            return
        now = time.monotonic()
        with self.lock:
            c = self.counts.get(kind)
            if c is None or now - c[0] >= _WARN_PERIOD:
                if c is not None and c[2]:
                    self.queue.append((f"%d more warnings like this were suppressed: {msg}", (c[2], *args)))
                c = self.counts[kind] = [now, 0, 0]
            if c[1] >= _WARN_BURST:
                c[2] += 1
                return
            c[1] += 1
            self.queue.append((msg, args))
            if self.thread is None:
                self.thread = threading.Thread(target=self._write, name="mesh-log", daemon=True)
                self.thread.start()
        self.wake.set()

    def _write(self) -> None:
        while True:
            self.wake.wait(_WARN_PERIOD)
            self.wake.clear()
            while True:
                try:
                    msg, args = self.queue.popleft()
                except IndexError:
                    break
                try:
                    self.log.warning(msg, *args)
                except Exception:
                    pass
            now = time.monotonic()
            with self.lock:  # summarise periods that ended with suppressed warnings
                ended = [(k, c) for k, c in self.counts.items() if c[2] and now - c[0] >= _WARN_PERIOD]
                for k, _ in ended:
                    del self.counts[k]
            for k, c in ended:
                try:
                    self.log.warning("%d more %s warnings were suppressed in the last %g s", c[2], k, _WARN_PERIOD)
                except Exception:
                    pass


class _Request:
    __slots__ = ("future", "endpoint", "deadline")

    def __init__(self, future: Future, endpoint: str, deadline: float | None) -> None:
        self.future = future
        self.endpoint = endpoint
        self.deadline = deadline


Handler = Callable[["Router", bytes, dict, Any, list], None]


class Router:
    """A bound ROUTER socket and the handler of its requests.

    The handler runs on the I/O thread: it must not block. It answers with
    :meth:`reply`, from any thread. ``on_burst_end``, if given, runs on the I/O
    thread after each burst of requests read in one go (for work the handler
    chose to batch).
    """

    def __init__(
        self, node: Node, handler: Handler, keys: Keys | None, max_message_size: int,
        on_burst_end: Callable[[], None] | None = None,
    ) -> None:
        self.node = node
        self.handler = handler
        self.on_burst_end = on_burst_end
        self.keys = keys
        self.max_message_size = max_message_size
        self.port = 0
        self.endpoint = ""
        self.sock: zmq.Socket | None = None
        self.backlog: dict[bytes, collections.deque] = {}  # replies waiting for a client whose queue is full
        self.dropped = 0  # replies dropped for clients past _BACKLOG_MAX

    def reply(self, identity: bytes, header: dict, body: bytes = b"\xc0", buffers: list | tuple = ()) -> None:
        """Send a reply to ``identity``; thread-safe, never blocks."""
        frames = [identity, SIGNATURE, pack_header(header), body, *buffers]
        if threading.get_ident() == self.node._ident:
            self.node._router_send(self, frames)
        else:
            self.node._submit(("rsend", self, frames))

    def close(self) -> None:
        """Unbind and close the socket (idempotent)."""
        self.node._submit(("rclose", self))


class Node:
    """The process's I/O thread and its sockets.

    Args:
        keys: CURVE keys for outgoing connections (``None``: plaintext).
        heartbeat_ivl: ZMTP heartbeat interval, seconds.
        heartbeat_timeout: a silent peer is dropped after this long, seconds.
        connect_timeout: a request waits this long for a connection, seconds.
    """

    def __init__(
        self,
        *,
        keys: Keys | None = None,
        heartbeat_ivl: float = 1.0,
        heartbeat_timeout: float = 3.0,
        connect_timeout: float = 5.0,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        self.keys = keys
        self.window = window if window and window > 0 else 0
        # requests in flight per endpoint (issuing threads wait when it reaches ``window``)
        self._inflight: dict[str, int] = {}
        self._window_cv = threading.Condition(threading.Lock())
        self._window_waiters = 0
        self.window_wait_hook: Callable[[], Any] | None = None  # a context manager around the wait
        self._warn = _Warnings(log)
        self.heartbeat_ivl = heartbeat_ivl
        self.heartbeat_timeout = heartbeat_timeout
        self.connect_timeout = connect_timeout
        self.ctx = zmq.Context()
        self.ctx.linger = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._woken = False
        self._dead = False
        self._wake_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._peers: dict[str, _Peer] = {}
        self._by_sock: dict[zmq.Socket, Any] = {}
        self._requests: dict[int, _Request] = {}
        self._deadlines: list[tuple[float, int]] = []
        self._routers: list[Router] = []
        self._zap: zmq.Socket | None = None
        self._zap_keys: dict[bytes, bytes] = {}  # domain -> allowed client public key (raw)
        self._timers: list[list] = []  # [next_due, interval, fn]
        self._backlogged: set[Router] = set()  # routers holding replies for full clients
        self._backlog_poll = _BACKLOG_POLL_MIN  # ms until the next retry of held replies
        self._backlog_due = 0.0
        self._poller = zmq.Poller()
        self._poller.register(self._wake_r, zmq.POLLIN)
        self._closed = False
        self._ident = 0
        self.sent_bytes = 0
        self.received_bytes = 0
        self._local = threading.local()  # per-thread sockets of call()
        self._directs: weakref.WeakSet[_Direct] = weakref.WeakSet()
        self._directs_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="mesh-io", daemon=True)
        self._started = threading.Event()
        self._thread.start()
        self._started.wait()

    # ------------------------------------------------------------------ API
    def next_id(self) -> int:
        """A fresh request id (thread-safe)."""
        return next(self._ids)

    def request(
        self,
        endpoint: str,
        header: dict,
        body: bytes,
        buffers: list | tuple = (),
        *,
        timeout: float | None = None,
    ) -> Future:
        """Send a request; the future gets ``(header, body, buffers)`` of the reply.

        ``header`` must already hold ``id`` (from :meth:`next_id`).
        The future fails with :class:`PeerUnavailable`, :class:`PeerAuthFailed`,
        :class:`RequestTimeout` or :class:`NodeClosed`.
        """
        fut: Future = Future()
        if self._closed:
            fut.set_exception(NodeClosed("the mesh node is closed"))
            return fut
        deadline = None if timeout is None else time.monotonic() + timeout
        frames = [SIGNATURE, pack_header(header), body, *buffers]
        if self.window:
            self._take_slot(endpoint)  # freed on the I/O thread when the request ends (_finish)
        self._submit(("req", endpoint, header["id"], frames, fut, deadline))
        return fut

    def inflight(self, endpoint: str) -> int:
        """Requests to ``endpoint`` not answered yet."""
        return self._inflight.get(endpoint, 0)

    def _take_slot(self, endpoint: str) -> None:
        """Count a request to ``endpoint``; wait while ``window`` are in flight (never on the I/O thread).

        A wait with no reply at all from that peer for ``_WINDOW_STALL`` seconds lets the
        request through anyway: a worker holding a slot while it issues calls whose
        completion needs it must never deadlock; a slow peer then gets one more per stall.
        """
        cv = self._window_cv
        with cv:
            n = self._inflight.get(endpoint, 0)
            if n < self.window or self.on_io_thread():
                self._inflight[endpoint] = n + 1
                return
        hook = self.window_wait_hook
        ctx = hook() if hook is not None else None
        if ctx is not None:
            ctx.__enter__()
        try:
            with cv:
                self._window_waiters += 1
                try:
                    while self._inflight.get(endpoint, 0) >= self.window and not self._closed:
                        if not cv.wait(_WINDOW_STALL):
                            break  # no reply for a while: do not wait forever
                finally:
                    self._window_waiters -= 1
                self._inflight[endpoint] = self._inflight.get(endpoint, 0) + 1
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)

    def _free_slot(self, endpoint: str) -> None:
        cv = self._window_cv
        with cv:
            n = self._inflight.get(endpoint, 1) - 1
            if n > 0:
                self._inflight[endpoint] = n
            else:
                self._inflight.pop(endpoint, None)
            if self._window_waiters:
                cv.notify()

    def send(
        self, endpoint: str, header: dict, body: bytes = b"\xc0", buffers: list | tuple = (), *, control: bool = False,
    ) -> None:
        """Send a one-way message (best effort, no reply expected).

        ``control``: on the peer's control connection, never queued behind calls (leases);
        dropped when that connection is not up or full.
        """
        if not self._closed:
            self._submit(("ctl" if control else "send", endpoint, [SIGNATURE, pack_header(header), body, *buffers]))

    def cancel(self, request_id: int) -> None:
        """Forget a pending request; a late reply is dropped."""
        self._submit(("cancel", request_id))

    def add_router(
        self,
        host: str,
        port: int,
        handler: Handler,
        *,
        keys: Keys | None = None,
        max_message_size: int = -1,
        on_burst_end: Callable[[], None] | None = None,
    ) -> Router:
        """Bind a ROUTER on ``tcp://host:port`` (port 0: a free port).

        Raises:
            OSError: the address cannot be bound (in use, not on this host...).
        """
        router = Router(self, handler, keys, max_message_size, on_burst_end)
        done: Future = Future()
        self._submit(("router", router, host, port, done))
        try:
            done.result()
        except zmq.ZMQError as exc:
            where = f"[{host}]" if ":" in host else host
            raise OSError(exc.errno, f"cannot listen on tcp://{where}:{port}: {zmq.strerror(exc.errno)}") from None
        return router

    def forget(self, endpoint: str) -> None:
        """Close the connection to ``endpoint`` unless a request waits on it (e.g. a peer that never
        answered); a later request connects again. Thread-safe; does nothing for an unknown peer."""

        def drop() -> None:
            peer = self._peers.get(endpoint)
            if peer is not None and not peer.pending and not peer.outbox:
                del self._peers[endpoint]
                self._close_peer_sockets(peer)

        if not self._closed:
            self._submit(("call", drop))

    def add_timer(self, interval: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the I/O thread every ``interval`` seconds (it must not block)."""
        self._submit(("call", lambda: self._timers.append([time.monotonic() + interval, interval, fn])))

    def remove_timer(self, fn: Callable[[], None]) -> None:
        self._submit(("call", lambda: self._timers.__setitem__(slice(None), [t for t in self._timers if t[2] is not fn])))

    def call(
        self,
        endpoint: str,
        header: dict,
        body: bytes,
        buffers: list | tuple = (),
        *,
        timeout: float | None = None,
    ) -> tuple:
        """Send a request and wait for its reply on a socket owned by the calling thread.

        The low-latency path for blocking calls: no hop through the I/O
        thread. Same failures as :meth:`request`, raised directly. Falls back
        to :meth:`request` on the I/O thread itself.
        """
        if self.on_io_thread() or self._closed:
            return self.request(endpoint, header, body, buffers, timeout=timeout).result()
        direct = self._direct(endpoint)
        with direct.lock:
            return direct.call(header, [SIGNATURE, pack_header(header), body, *buffers], timeout)

    def _direct(self, endpoint: str) -> _Direct:
        mine = getattr(self._local, "sockets", None)
        if mine is None:
            mine = self._local.sockets = {}
        direct = mine.get(endpoint)
        if direct is None or direct.closed:
            direct = _Direct(self, endpoint)
            mine[endpoint] = direct
            with self._directs_lock:
                self._directs.add(direct)
        return direct

    def on_io_thread(self) -> bool:
        return threading.get_ident() == self._ident

    def close(self, timeout: float = 5.0) -> None:
        """Fail pending requests, close every socket, stop the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        with self._directs_lock:
            directs = list(self._directs)
            self._directs = weakref.WeakSet()
        for direct in directs:  # idle ones close now; busy ones close themselves within 0.1 s
            if direct.lock.acquire(blocking=False):
                try:
                    direct.close()
                finally:
                    direct.lock.release()
        self._submit(("stop",))
        if not self.on_io_thread():
            self._thread.join(timeout)

    # ------------------------------------------------------------ internals
    def _submit(self, item: tuple) -> None:
        self._queue.put(item)
        if not self._woken:
            self._woken = True
            with self._wake_lock:
                if self._dead:
                    return
                try:
                    os.write(self._wake_w, b"x")
                except OSError:  # pipe full: the thread is awake anyway
                    pass

    def _run(self) -> None:
        self._ident = threading.get_ident()
        self._started.set()
        try:
            self._loop()
        except Exception:  # pragma: no cover - a bug; keep the process alive
            log.exception("mesh I/O thread crashed")
        finally:
            self._teardown()

    def _loop(self) -> None:
        poller = self._poller
        while True:
            timeout = self._next_timeout()
            try:
                events = poller.poll(timeout)
            except zmq.ZMQError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            for target, mask in events:
                if target == self._wake_r:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                    continue
                kind = self._by_sock.get(target)
                if kind is None:
                    continue
                try:
                    if mask & zmq.POLLOUT and isinstance(kind, _Peer):
                        self._flush_outbox(kind)
                    if mask & zmq.POLLIN:
                        self._on_readable(target, kind)
                except Exception:
                    log.exception("error handling socket event")
            self._woken = False
            if self._drain():
                return
            self._expire()
            if self._timers:
                self._run_timers()
            if self._backlogged:
                self._flush_router_backlogs()

    def _drain(self) -> bool:
        q = self._queue
        while True:
            try:
                item = q.get_nowait()
            except queue.Empty:
                return False
            op = item[0]
            try:
                if op == "req":
                    self._do_request(*item[1:])
                elif op == "rsend":
                    self._router_send(item[1], item[2])
                elif op == "send":
                    peer = self._peer(item[1])
                    if peer.up:
                        self._peer_send(peer, item[2])
                    else:
                        peer.outbox.append((0, item[2]))
                elif op == "ctl":
                    self._ctl_send(self._peer(item[1]), item[2])
                elif op == "cancel":
                    self._finish(item[1])
                elif op == "router":
                    self._do_router(*item[1:])
                elif op == "rclose":
                    self._do_rclose(item[1])
                elif op == "call":
                    item[1]()
                elif op == "stop":
                    return True
            except Exception as exc:
                log.exception("error in I/O command %s", op)
                if op == "req" and not item[4].done():
                    if self.window and item[2] not in self._requests:
                        self._free_slot(item[1])
                    item[4].set_exception(TransportError(f"cannot send: {exc}"))

    # client side ---------------------------------------------------------
    def _peer(self, endpoint: str) -> _Peer:
        peer = self._peers.get(endpoint)
        if peer is not None:
            return peer
        sock = self._dealer(endpoint, heartbeat=False)  # data: no heartbeat (see the module's docstring)
        mon = sock.get_monitor_socket(_MONITOR_EVENTS)
        peer = _Peer(endpoint, sock, mon, time.monotonic() + self.connect_timeout)
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            sock.disable_monitor()
            mon.close(0)
            sock.close(0)
            raise PeerUnavailable(endpoint, f"bad address: {exc}") from None
        ctl = self._dealer(endpoint, heartbeat=True)
        ctl.setsockopt(zmq.SNDHWM, 100)
        ctl_mon = ctl.get_monitor_socket(_MONITOR_EVENTS)
        ctl.connect(endpoint)
        peer.ctl, peer.ctl_mon = ctl, ctl_mon
        self._peers[endpoint] = peer
        self._by_sock[sock] = peer
        self._by_sock[mon] = ("mon", peer)
        self._by_sock[ctl] = ("ctl", peer)
        self._by_sock[ctl_mon] = ("ctlmon", peer)
        self._poller.register(sock, zmq.POLLIN)
        self._poller.register(mon, zmq.POLLIN)
        self._poller.register(ctl, zmq.POLLIN)
        self._poller.register(ctl_mon, zmq.POLLIN)
        heapq.heappush(self._deadlines, (peer.connect_deadline, -1))
        return peer

    def _dealer(self, endpoint: str, *, heartbeat: bool) -> zmq.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.immediate = 1
        sock.ipv6 = "[" in endpoint  # IPv6 peers only: ZMQ_IPV6 also changes how names resolve
        self._heartbeat(sock, heartbeat)
        sock.setsockopt(zmq.CONNECT_TIMEOUT, int(min(self.connect_timeout, 2.0) * 1000))
        sock.setsockopt(zmq.HANDSHAKE_IVL, int(self.connect_timeout * 1000))
        if self.keys is not None:
            sock.curve_serverkey = self.keys.server_public
            sock.curve_publickey = self.keys.client_public
            sock.curve_secretkey = self.keys.client_secret
        return sock

    def _heartbeat(self, sock: zmq.Socket, on: bool = True) -> None:
        """High-water marks, and ZMTP heartbeats for a connection that never backs up.

        A silent peer is dropped within ``heartbeat_timeout``: the last PING goes out at
        most ``heartbeat_ivl`` after the peer froze, so libzmq's timeout is what is left
        of ``heartbeat_timeout`` after one interval (and one poll slice of _Direct).
        """
        sock.setsockopt(zmq.SNDHWM, _HWM)
        sock.setsockopt(zmq.RCVHWM, _HWM)
        if not on:
            return
        ivl = self.heartbeat_ivl
        timeout = max(0.1, self.heartbeat_timeout - ivl - max(_Direct._SLICE / 1000, _CTL_GRACE))
        sock.setsockopt(zmq.HEARTBEAT_IVL, max(1, int(ivl * 1000)))
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(timeout * 1000))
        sock.setsockopt(zmq.HEARTBEAT_TTL, int(self.heartbeat_timeout * 1000))

    def _ctl_send(self, peer: _Peer, frames: list) -> None:
        """A one-way message on the control connection; dropped if it is not up or full."""
        if peer.ctl is None:
            return
        if not peer.ctl_up:
            if len(peer.ctl_outbox) < 16:
                peer.ctl_outbox.append(frames)
            return
        try:
            _send(peer.ctl, frames, 4)
        except zmq.ZMQError:
            log.debug("%s: control message dropped (connection full or down)", peer.endpoint)

    def _do_request(self, endpoint: str, rid: int, frames: list, fut: Future, deadline: float | None) -> None:
        if not fut.set_running_or_notify_cancel():
            if self.window:
                self._free_slot(endpoint)
            return
        try:
            peer = self._peer(endpoint)
        except PeerUnavailable as exc:
            if self.window:
                self._free_slot(endpoint)
            fut.set_exception(exc)
            return
        self._requests[rid] = _Request(fut, endpoint, deadline)
        peer.pending.add(rid)
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, rid))
        if peer.up:
            self._peer_send(peer, frames, rid)
        else:
            peer.outbox.append((rid, frames))

    def _peer_send(self, peer: _Peer, frames: list, rid: int = 0) -> None:
        if peer.outbox:  # keep order behind the backlog
            peer.outbox.append((rid, frames))
            return
        if not self._try_send(peer, frames, rid):
            peer.outbox.append((rid, frames))
            self._poller.register(peer.sock, zmq.POLLIN | zmq.POLLOUT)

    def _try_send(self, peer: _Peer, frames: list, rid: int) -> bool:
        """Send now; False if the peer's queue is full (the caller keeps the frames)."""
        try:
            _send(peer.sock, frames, 3)
            self.sent_bytes += sum(map(len, frames))
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            self._fail(rid, PeerUnavailable(peer.endpoint, f"send failed: {exc}"))
        return True

    def _flush_outbox(self, peer: _Peer) -> None:
        outbox = peer.outbox
        while outbox:
            rid, frames = outbox[0]
            if rid and rid not in self._requests:  # timed out or cancelled meanwhile
                outbox.pop(0)
                continue
            if not self._try_send(peer, frames, rid):
                self._poller.register(peer.sock, zmq.POLLIN | zmq.POLLOUT)
                return
            outbox.pop(0)
        self._poller.register(peer.sock, zmq.POLLIN)

    def _fail(self, rid: int, exc: Exception) -> None:
        req = self._finish(rid)
        if req is not None and not req.future.done():
            req.future.set_exception(exc)

    def _finish(self, rid: int) -> _Request | None:
        req = self._requests.pop(rid, None)
        if req is not None:
            peer = self._peers.get(req.endpoint)
            if peer is not None:
                peer.pending.discard(rid)
            if self.window:
                self._free_slot(req.endpoint)
        return req

    def _on_readable(self, sock: zmq.Socket, kind: Any) -> None:
        if isinstance(kind, _Peer):
            self._on_reply(kind)
        elif isinstance(kind, Router):
            self._on_request(kind)
        elif kind == "zap":
            self._on_zap()
        elif kind[0] == "mon":
            self._on_monitor(kind[1])
        elif kind[0] == "ctlmon":
            self._on_ctl_monitor(kind[1])
        else:  # the control connection gets no replies: drain whatever comes
            while True:
                try:
                    sock.recv(_NOBLOCK)
                except zmq.Again:
                    return

    def _on_ctl_monitor(self, peer: _Peer) -> None:
        """The control connection's events: once it was up, losing it means the peer is gone."""
        mon = peer.ctl_mon
        while mon is not None:
            try:
                msg = parse_monitor_message(mon.recv_multipart(zmq.NOBLOCK))
            except Exception:
                return
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
                heapq.heappush(self._deadlines, (peer.ctl_lost + _CTL_GRACE, -2))
                return

    def _on_reply(self, peer: _Peer) -> None:
        sock = peer.sock
        for _ in range(256):
            if not sock.get(_EVENTS) & _POLLIN:  # cheaper than an Again exception
                return
            frames = _recv(sock, 3)
            self.received_bytes += sum(map(len, frames))
            try:
                header, body, buffers = split_frames(frames)
            except FrameError as exc:
                self._warn("badreply", "dropping malformed reply from %s: %s", peer.endpoint, exc)
                continue
            rid = header.get("re")
            req = self._finish(rid) if isinstance(rid, int) else None
            if req is None:
                log.debug("dropping late or unknown reply %r from %s", rid, peer.endpoint)
                continue
            if not req.future.done():
                req.future.set_result((header, body, buffers))

    def _on_monitor(self, peer: _Peer) -> None:
        while True:
            try:
                msg = parse_monitor_message(peer.mon.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return
            except Exception:
                return
            if msg["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                peer.up = True
                self._flush_outbox(peer)
                continue
            exc = _connection_event(peer, msg, self.keys is not None)
            if exc is not None:
                # replies that arrived before the connection went are already queued: deliver
                # them first (the monitor socket may be polled before the peer's)
                try:
                    self._on_reply(peer)
                except Exception:
                    log.debug("draining %s before dropping it failed", peer.endpoint, exc_info=True)
                self._drop_peer(peer, exc)
                return

    def _drop_peer(self, peer: _Peer, exc: Exception) -> None:
        """Fail what waits on ``peer``: requests never handed to libzmq cannot have run;
        those that were sent may have (:class:`PeerLost`, unless ``exc`` says more)."""
        if self._peers.get(peer.endpoint) is peer:
            del self._peers[peer.endpoint]
        unsent = {rid for rid, _ in peer.outbox}
        lost = exc
        if type(exc) is PeerUnavailable:
            lost = PeerLost(peer.endpoint, f"{exc.reason}; the request was sent and may have run")
        for rid in list(peer.pending):
            if rid not in unsent:
                self._fail(rid, lost)
        for rid in unsent:
            self._fail(rid, exc)
        peer.outbox.clear()
        self._close_peer_sockets(peer)

    def _close_peer_sockets(self, peer: _Peer, linger: int = 0) -> None:
        for s in (peer.sock, peer.mon, peer.ctl, peer.ctl_mon):
            if s is None:
                continue
            self._by_sock.pop(s, None)
            try:
                self._poller.unregister(s)
            except KeyError:
                pass
        for sock, mon, lin in ((peer.sock, peer.mon, linger), (peer.ctl, peer.ctl_mon, 0)):
            if sock is None or mon is None:
                continue
            try:
                sock.disable_monitor()
            except zmq.ZMQError:
                pass
            mon.close(0)
            sock.close(lin)
        peer.ctl = peer.ctl_mon = None

    def _next_timeout(self) -> int:
        due = [self._deadlines[0][0]] if self._deadlines else []
        if self._backlogged:
            due.append(self._backlog_due)  # retry held replies (backing off, see _flush_router_backlogs)
        due.extend(t[0] for t in self._timers)
        if not due:
            return 1000
        delay = min(due) - time.monotonic()
        return max(0, min(1000, int(delay * 1000) + 1))

    def _run_timers(self) -> None:
        now = time.monotonic()
        for timer in list(self._timers):
            if timer[0] <= now:
                timer[0] = now + timer[1]
                try:
                    timer[2]()
                except Exception:
                    log.exception("timer callback failed")

    def _expire(self) -> None:
        now = time.monotonic()
        dl = self._deadlines
        while dl and dl[0][0] <= now:
            _, rid = heapq.heappop(dl)
            if rid == -2:
                for peer in list(self._peers.values()):
                    if peer.ctl_lost and peer.ctl_lost + _CTL_GRACE <= now:
                        try:
                            self._on_reply(peer)
                        except Exception:
                            log.debug("draining %s before dropping it failed", peer.endpoint, exc_info=True)
                        self._drop_peer(peer, PeerUnavailable(peer.endpoint, "connection lost (peer died, froze or network down)"))
                continue
            if rid == -1:
                for peer in list(self._peers.values()):
                    if not peer.up and peer.connect_deadline <= now:
                        self._drop_peer(peer, PeerUnavailable(peer.endpoint, f"no connection within {self.connect_timeout:g} s"))
                continue
            req = self._requests.get(rid)
            if req is not None and req.deadline is not None and req.deadline <= now:
                self._fail(rid, RequestTimeout(f"{req.endpoint}: no reply within the deadline"))

    # server side ---------------------------------------------------------
    def _do_router(self, router: Router, host: str, port: int, done: Future) -> None:
        try:
            sock = self.ctx.socket(zmq.ROUTER)
            sock.linger = 0
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            # No ZMTP heartbeat of our own: a connection whose input is stopped by back-pressure
            # cannot see PINGs, and dropping it for that is both wrong (the client is alive) and
            # the trigger of libzmq's "!_io_error" / "_input_stopped" asserts. Clients' control
            # and sync connections still ping us (libzmq answers without the GIL) and ask for a
            # TTL; dead clients' data connections go by TCP keepalive and TCP_MAXRT.
            self._heartbeat(sock, False)
            # Nor a receive high-water mark: libzmq aborts ("!_io_error", stream_engine_base.cpp)
            # when a connection whose input is stopped by a full pipe is closed by the client and
            # a PING of that client is then decoded. With no limit the input never stops; this
            # thread reads every request anyway (clients bound what they have in flight).
            sock.setsockopt(zmq.RCVHWM, 0)
            sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
            sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 10)
            sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 2)
            sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, 5)
            sock.setsockopt(zmq.TCP_MAXRT, 30000)
            if router.max_message_size and router.max_message_size > 0:
                sock.setsockopt(zmq.MAXMSGSIZE, router.max_message_size)
            if router.keys is not None:
                self._ensure_zap()
                self._zap_keys[router.keys.domain] = _z85_raw(router.keys.client_public)
                sock.curve_server = True
                sock.curve_secretkey = router.keys.server_secret
                sock.curve_publickey = router.keys.server_public
                sock.zap_domain = router.keys.domain
            bind_host = f"[{host}]" if ":" in host else host
            if ":" in host:
                sock.ipv6 = True  # an IPv6 address (also "::", which then takes IPv4 too)
            if port == 0:
                router.port = sock.bind_to_random_port(f"tcp://{bind_host}", min_port=20000, max_port=60000, max_tries=200)
            else:
                sock.bind(f"tcp://{bind_host}:{port}")
                router.port = port
            router.endpoint = f"tcp://{bind_host}:{router.port}"
            router.sock = sock
            self._routers.append(router)
            self._by_sock[sock] = router
            self._poller.register(sock, zmq.POLLIN)
            done.set_result(router)
        except Exception as exc:
            try:
                sock.close(0)
            except Exception:
                pass
            done.set_exception(exc)

    def _do_rclose(self, router: Router) -> None:
        sock = router.sock
        if sock is None:
            return
        router.sock = None
        router.backlog.clear()
        self._backlogged.discard(router)
        self._by_sock.pop(sock, None)
        self._poller.unregister(sock)
        sock.close(_ROUTER_LINGER)  # replies sent just before a shutdown still go out
        if router in self._routers:
            self._routers.remove(router)

    def _ensure_zap(self) -> None:
        if self._zap is None:
            zap = self.ctx.socket(zmq.REP)
            zap.linger = 0
            zap.bind(ZAP_ENDPOINT)
            self._zap = zap
            self._by_sock[zap] = "zap"
            self._poller.register(zap, zmq.POLLIN)

    def _on_zap(self) -> None:
        assert self._zap is not None
        while True:
            try:
                msg = self._zap.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            ok = False
            if len(msg) >= 7:
                version, request_id, domain, _addr, _ident, mechanism = msg[:6]
                allowed = self._zap_keys.get(domain)
                ok = mechanism == b"CURVE" and allowed is not None and msg[6] == allowed
                reply = [version, request_id, b"200" if ok else b"400", b"OK" if ok else b"unknown key", b"", b""]
            else:
                reply = [b"1.0", msg[1] if len(msg) > 1 else b"", b"500", b"bad ZAP request", b"", b""]
            if not ok:
                self._warn("auth", "rejected a peer whose secret does not match")
            self._zap.send_multipart(reply)

    def _on_request(self, router: Router) -> None:
        sock = router.sock
        if sock is None:
            return
        try:
            self._read_requests(router, sock)
        finally:
            if router.on_burst_end is not None:
                try:
                    router.on_burst_end()
                except Exception:
                    log.exception("burst-end handler failed")

    def _read_requests(self, router: Router, sock: zmq.Socket) -> None:
        for _ in range(256):
            if not sock.get(_EVENTS) & _POLLIN:
                return
            frames = _recv(sock, 4)
            identity = frames[0]
            try:
                header, body, buffers = split_frames(frames[1:])
            except VersionMismatch as exc:
                self._router_send(router, [identity, SIGNATURE, pack_header({"op": "err", "re": None, "kind": "protocol", "msg": str(exc)}), b"\xc0"])
                continue
            except FrameError as exc:
                self._warn("malformed", "malformed request on %s: %s", router.endpoint, exc)
                self._router_send(router, [identity, SIGNATURE, pack_header({"op": "err", "re": None, "kind": "protocol", "msg": str(exc)}), b"\xc0"])
                continue
            try:
                router.handler(router, identity, header, body, buffers)
            except Exception:
                log.exception("request handler failed")

    def _router_send(self, router: Router, frames: list) -> None:
        backlog = router.backlog.get(frames[0])
        if backlog is not None:  # keep order behind what waits for this client
            if len(backlog) >= _BACKLOG_MAX:
                # the client does not read: past this bound its replies are dropped (a client
                # that went lost them anyway; one that reads again gets the newer ones)
                router.dropped += 1
                if router.dropped == 1 or router.dropped % 10000 == 0:
                    self._warn("backlog", "a client of %s does not read its replies: %d dropped so far "
                               "(at most %d held per client)", router.endpoint, router.dropped, _BACKLOG_MAX)
                return
            backlog.append(frames)
            return
        if not self._router_try(router, frames):
            router.backlog[frames[0]] = collections.deque([frames])
            self._backlogged.add(router)
            self._backlog_poll = _BACKLOG_POLL_MIN

    def _router_try(self, router: Router, frames: list) -> bool:
        """Send a reply; False if the client's queue is full. Vanished clients' replies are dropped."""
        sock = router.sock
        if sock is None:
            return True
        try:
            _send(sock, frames, 4)
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                log.debug("dropping a reply: client gone")
            else:
                self._warn("reply", "dropping a reply: %s", exc)
        return True

    def _flush_router_backlogs(self) -> None:
        now = time.monotonic()
        if now < self._backlog_due:
            return
        sent = False
        for router in list(self._backlogged):
            for identity, frames_list in list(router.backlog.items()):
                while frames_list and self._router_try(router, frames_list[0]):
                    frames_list.popleft()
                    sent = True
                if not frames_list:
                    del router.backlog[identity]
            if not router.backlog:
                self._backlogged.discard(router)
        # back off while nothing goes out (a client that does not read must not cost a core)
        self._backlog_poll = _BACKLOG_POLL_MIN if sent else min(_BACKLOG_POLL_MAX, self._backlog_poll * 2)
        self._backlog_due = now + self._backlog_poll / 1000

    def _teardown(self) -> None:
        exc = NodeClosed("the mesh node was closed")
        for rid in list(self._requests):
            self._fail(rid, exc)
        for peer in list(self._peers.values()):
            self._close_peer_sockets(peer, linger=200)  # let last one-way messages (bye) out
        self._peers.clear()
        for router in list(self._routers):
            self._do_rclose(router)
        if self._zap is not None:
            self._zap.close(0)
        # fail anything still queued
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item[0] == "req" and not item[4].done():
                item[4].set_exception(exc)
            elif item[0] == "router":
                item[4].set_exception(exc)
        try:
            self.ctx.term()
        except Exception:
            pass
        with self._wake_lock:
            self._dead = True
            os.close(self._wake_r)
            os.close(self._wake_w)


class _Direct:
    """A DEALER owned by one user thread, for blocking calls to one peer."""

    _SLICE = 100  # ms: how often a waiting call checks that the node is still open

    def __init__(self, node: Node, endpoint: str) -> None:
        self.node = node
        self.endpoint = endpoint
        self.lock = threading.Lock()
        self.closed = False
        self.up = False
        self.retries = 0
        self.hs_failures = 0
        sock = node.ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.ipv6 = "[" in endpoint
        node._heartbeat(sock)
        sock.setsockopt(zmq.CONNECT_TIMEOUT, int(min(node.connect_timeout, 2.0) * 1000))
        sock.setsockopt(zmq.HANDSHAKE_IVL, int(node.connect_timeout * 1000))
        if node.keys is not None:
            sock.curve_serverkey = node.keys.server_public
            sock.curve_publickey = node.keys.client_public
            sock.curve_secretkey = node.keys.client_secret
        self.mon = sock.get_monitor_socket(_MONITOR_EVENTS)
        self.sock = sock
        self.poller = zmq.Poller()
        self.poller.register(sock, zmq.POLLIN)
        self.poller.register(self.mon, zmq.POLLIN)
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise PeerUnavailable(endpoint, f"bad address: {exc}") from None

    def call(self, header: dict, frames: list, timeout: float | None) -> tuple:
        if self.closed:
            raise NodeClosed("the mesh node was closed")
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        # What happened while this socket sat idle (a heartbeat timeout, a reconnect) is
        # learnt before sending: a stale "disconnected" must not fail a call sent afterwards.
        if self.mon.get(_EVENTS) & _POLLIN:  # cheaper than an Again exception on every call
            self._on_monitor(sent=False)
        if not self.up:
            self._wait_up(now + self.node.connect_timeout)
        _send_blocking(self.sock, frames)
        self.node.sent_bytes += sum(map(len, frames))
        rid = header["id"]
        while True:
            wait = self._SLICE if deadline is None else max(0, min(self._SLICE, int((deadline - time.monotonic()) * 1000) + 1))
            events = dict(self.poller.poll(wait))
            # the socket before the monitor: a reply that came just before the connection
            # went must not be lost to the disconnect event
            if self.sock in events:
                while True:
                    try:
                        reply = _recv(self.sock, 3)
                    except zmq.Again:
                        break
                    self.node.received_bytes += sum(map(len, reply))
                    try:
                        rh, body, bufs = split_frames(reply)
                    except FrameError:
                        continue
                    if rh.get("re") == rid:
                        return rh, body, bufs
                    # a late reply to an earlier call of this thread that timed out: drop it
            if self.mon in events:
                self._on_monitor(sent=True)
            if self.node._closed:
                self.close()
                raise NodeClosed("the mesh node was closed")
            if deadline is not None and time.monotonic() >= deadline:
                raise RequestTimeout(f"{self.endpoint}: no reply within the deadline")

    def _wait_up(self, deadline: float) -> None:
        while not self.up:
            wait = int((deadline - time.monotonic()) * 1000)
            if wait <= 0:
                self.close()
                raise PeerUnavailable(self.endpoint, f"no connection within {self.node.connect_timeout:g} s")
            if self.mon.poll(min(wait, self._SLICE)):
                self._on_monitor(sent=False)
            if self.node._closed:
                self.close()
                raise NodeClosed("the mesh node was closed")

    def _on_monitor(self, sent: bool) -> None:
        """Process pending connection events; ``sent``: a request is out on this socket.

        A lost connection fails the call only when a request is out (then with
        :class:`PeerLost`: it may have run); otherwise the socket waits for libzmq's
        reconnection before sending.
        """
        while True:
            try:
                msg = parse_monitor_message(self.mon.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return
            if msg["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.up = True
                self.retries = self.hs_failures = 0
                continue
            if msg["event"] == zmq.EVENT_DISCONNECTED and self.up:
                self.up = False
                if sent:
                    self.close()
                    raise PeerLost(self.endpoint, "connection lost (peer died, froze or network down) "
                                   "while the request was out: it may have run")
                continue
            exc = _connection_event(self, msg, self.node.keys is not None)
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
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self.mon.close(0)
        self.sock.close(0)


_MECHANISM_MISMATCH = 0x11000002  # ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH


def _connection_event(conn: Any, msg: dict, secure: bool) -> Exception | None:
    """What a monitor event means for a connection (``conn`` has endpoint, up, retries, hs_failures).

    Returns the error that fails its requests, or None to keep trying. A
    security mismatch fails every handshake; a dying server fails one and then
    refuses connections; a link that just came back needs a retry or two.
    """
    event, endpoint = msg["event"], conn.endpoint
    log.debug("%s: %s %s", endpoint, zmq.Event(event).name, msg.get("value"))
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and msg.get("value") == _MECHANISM_MISMATCH:
        if secure:
            return PeerAuthFailed(endpoint, "security handshake failed: we use a secret and the server uses none")
        return PeerAuthFailed(endpoint, "authentication failed: the server requires a secret (MESH_SECRET) and we have none")
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return PeerAuthFailed(endpoint, "authentication failed: the server rejected our secret")
    if event in _HANDSHAKE_FAILED:
        conn.hs_failures += 1
        if conn.hs_failures >= 2:
            return PeerAuthFailed(endpoint, "security handshake failed twice: wrong or missing secret, a server without one, or not a mesh server")
        return None  # libzmq reconnects; the next attempt tells a dead server from a wrong secret
    if event == zmq.EVENT_DISCONNECTED:
        if conn.up:
            return PeerUnavailable(endpoint, "connection lost (peer died or network down)")
        return None  # closed during the handshake: libzmq reconnects, as above
    if event == zmq.EVENT_CONNECT_RETRIED and not conn.up:
        conn.retries += 1
        if conn.retries >= _CONNECT_TRIES:
            return PeerUnavailable(endpoint, "connection refused or unreachable")
    return None


def _send_blocking(sock: zmq.Socket, frames: list) -> None:
    if len(frames) <= 3:
        sock.send_multipart(frames)
        return
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        sock.send(frame, _SNDMORE if i < last else 0, copy=i < 3)


def _send(sock: zmq.Socket, frames: list, small: int) -> None:
    """Send without blocking; the first ``small`` frames are copied, buffers go zero-copy.

    A zero-copy send of a small frame costs more than copying it (a Frame
    object per part), so only the trailing buffer frames use ``copy=False``.
    """
    if len(frames) <= small:
        sock.send_multipart(frames, flags=_NOBLOCK)
        return
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        sock.send(frame, _NOBLOCK_MORE if i < last else _NOBLOCK, copy=i < small)


def _recv(sock: zmq.Socket, small: int) -> list:
    """Receive one multipart message: small leading frames as bytes, buffers as zmq.Frame."""
    frames = [sock.recv(_NOBLOCK)]
    get = sock.get  # ints, not getsockopt's enums: this runs for every frame
    while get(_RCVMORE):
        frames.append(sock.recv(0, len(frames) < small))
    return frames


def parse_monitor_message(frames: list) -> dict:
    """Decode a socket-monitor event: (uint16 event, uint32 value) native-endian, then the endpoint.

    Ours, not ``zmq.utils.monitor``'s: that module imports ``zmq.asyncio`` and
    ``asyncio`` (~27 ms of every child server's start).
    """
    if len(frames) < 2 or len(frames[0]) != 6:
        raise ValueError("not a monitor event")
    event, value = _MONITOR_EVENT.unpack(frames[0])
    return {"event": event, "value": value, "endpoint": frames[1]}


def _z85_raw(key: bytes) -> bytes:
    from zmq.utils import z85

    return z85.decode(key)


def unpack_small(data: Any) -> Any:
    """Decode a small msgpack value (helper for control replies)."""
    return msgpack.unpackb(data, raw=False)
