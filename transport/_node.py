"""Node: the process's I/O thread and its sockets, composed from the transport's rooms.

==================  ==========================================================
room                what it does
==================  ==========================================================
``_loop``           the I/O thread: commands + wake pipe, a handler per socket, timers
``_dealers``        client side on the loop: a peer per endpoint, outbox, replies
``_peer``           one peer's state; batches of queued requests (protocol 1.4)
``_window``         back-pressure: requests in flight per peer
``_routers``        server side on the loop: bound ROUTERs, burst reads, reply backlog
``_zap``            which CURVE clients a secured ROUTER accepts
``_direct``         a DEALER owned by one user thread (blocking calls)
``_sockets``        socket options, send/recv, what a monitor event means
``_log``            the logger; warnings of the I/O thread, rate-limited
==================  ==========================================================

ZeroMQ sockets are not thread-safe, so the I/O thread owns every socket but
the thread-owned ones of :meth:`Node.call`; other threads hand it commands.
The reliability rules are in the docstrings of ``_dealers`` and ``_routers``.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
import weakref
from typing import Any, Callable

import zmq

from transport._dealers import CTL_GRACE, Dealers, Pending
from transport._peer import PendingReply
from transport._direct import SLICE, Direct
from transport._errors import NodeClosed, PeerUnavailable
from transport._framing import SIGNATURE, pack_header
from transport._future import PartsFuture, ReplyFuture as Future
from transport._log import Warnings, log
from transport._loop import Call, Loop
from transport._routers import Bind, Handler, Router, Routers
from transport._security import Keys
from transport._sockets import Counters, DealerRecipe
from transport._window import DEFAULT_WINDOW, Window
from transport._zap import Zap

__all__ = ["DEFAULT_WINDOW", "Node", "Router"]


class Node:
    """The process's I/O thread and its sockets.

    Args:
        keys: CURVE keys for outgoing connections (``None``: plaintext).
        heartbeat_ivl: ZMTP heartbeat interval, seconds.
        heartbeat_timeout: a silent peer is dropped after this long, seconds.
        connect_timeout: a request waits this long for a connection, seconds.
        window: requests in flight per peer before the issuing thread waits (0: no limit).
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
        self.heartbeat_ivl = heartbeat_ivl
        self.heartbeat_timeout = heartbeat_timeout
        self.connect_timeout = connect_timeout
        self.ctx = zmq.Context()
        self.ctx.linger = 0
        self._closed = False
        self._ids = itertools.count(1)
        self._warn = Warnings(log)
        self._counters = Counters()
        self._loop = Loop(self._teardown)
        self._window = Window(window, self._loop.on_thread, lambda: self._closed)
        self.window = self._window.size
        # either driver may notice a lost connection this late after libzmq did
        self._recipe = DealerRecipe(
            self.ctx, keys, connect_timeout=connect_timeout, heartbeat_ivl=heartbeat_ivl,
            heartbeat_timeout=heartbeat_timeout, slack=max(SLICE / 1000, CTL_GRACE),
        )
        self._dealers = Dealers(self._loop, self._recipe, self._counters, self._window, self._warn)
        self._zap = Zap(self._warn)
        self._servers = Routers(self._loop, self.ctx, self._zap, self._warn)
        self._local = threading.local()  # per-thread sockets of call()
        self._directs: weakref.WeakSet[Direct] = weakref.WeakSet()
        self._directs_lock = threading.Lock()
        self._loop.start()

    # -------------------------------------------------------------- state
    @property
    def _thread(self) -> threading.Thread:
        return self._loop.thread

    @property
    def _routers(self) -> list[Router]:
        """The bound routers (non-empty: this process serves)."""
        return self._servers.routers

    @property
    def io_ident(self) -> int:
        """The I/O thread's ident: a handler compares it to know where it runs."""
        return self._loop.ident

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has begun."""
        return self._closed

    @property
    def serving(self) -> bool:
        """True while this node has a bound ROUTER (this process serves)."""
        return bool(self._servers.routers)

    @property
    def sent_bytes(self) -> int:
        return self._counters.sent

    @property
    def received_bytes(self) -> int:
        return self._counters.received

    @property
    def window_wait_hook(self) -> Callable[[], Any] | None:
        """A context manager factory entered while a thread waits for the window."""
        return self._window.wait_hook

    @window_wait_hook.setter
    def window_wait_hook(self, hook: Callable[[], Any] | None) -> None:
        self._window.wait_hook = hook

    def on_io_thread(self) -> bool:
        return threading.get_ident() == self._loop.ident

    def hand_off_io(self, ident: int) -> bool:
        """A request handler running on I/O thread ``ident`` is about to wait or runs long: a new
        thread takes the I/O loop over (see :meth:`transport._loop.Loop.hand_off`). Thread-safe."""
        return self._loop.hand_off(ident)

    def host_event_loop(self, setup: Callable[[Any], None] | None = None) -> Any:
        """Have the I/O thread run a new asyncio loop (see :mod:`transport._hosted`): its
        :class:`~transport._hosted.Host` (``.loop``, ``.ident``, ``.done``), or None if this node hosts
        one already or is closed. ``setup(loop)`` runs first (a task factory, an executor)."""
        if self._closed:
            return None
        from transport._hosted import host  # asyncio: only for a node that hosts a loop

        return host(self._loop, setup)

    def stepping(self, on: bool) -> None:
        """The hosting thread enters (True) or leaves a step of its asyncio loop: meanwhile replies
        it sends go through the I/O queue (a hand-off may come while the step runs)."""
        self._loop.stepping = on

    # ------------------------------------------------------------ clients
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
        on_part: Callable[[tuple], None] | None = None,
    ) -> Future:
        """Send a request; the future gets ``(header, body, buffers)`` of the reply.

        ``header`` must already hold ``id`` (from :meth:`next_id`).
        The future fails with :class:`PeerUnavailable`, :class:`PeerAuthFailed`,
        :class:`RequestTimeout` or :class:`NodeClosed`. ``on_part``: the request is answered in
        parts; each reply with a ``more`` key goes to ``on_part((header, body, buffers))`` on the
        I/O thread (it must not block), and the last one (without ``more``) completes the future.
        """
        fut: Future = Future() if on_part is None else PartsFuture(on_part)
        if self._closed:
            fut.set_exception(NodeClosed("the mesh node is closed"))
            return fut
        deadline = None if timeout is None else time.monotonic() + timeout
        frames = [SIGNATURE, pack_header(header), body, *buffers]
        if self.window:
            self._window.take(endpoint)  # freed on the I/O thread when the request ends
        self._loop.submit(Pending(self._dealers, header["id"], endpoint, frames, fut, deadline))
        return fut

    def request_frames(self, endpoint: str, rid: int, frames: list, fut: Future) -> Future:
        """:meth:`request` with the frames made by the caller (``[SIGNATURE, header, body]``, the
        header holding ``id: rid``, from :meth:`next_id`) and its future (a :class:`ReplyFuture`, or
        a subclass of it; a :class:`PendingReply` is its own request record); no timeout, no
        parts. Returns ``fut``."""
        if self._closed:
            fut.set_exception(NodeClosed("the mesh node is closed"))
            return fut
        if self.window:
            self._window.take(endpoint)  # freed on the I/O thread when the request ends
        if isinstance(fut, PendingReply):  # its own request record (one object fewer per call)
            fut.dealers, fut.rid, fut.endpoint, fut.frames, fut.deadline = self._dealers, rid, endpoint, frames, None
            self._loop.submit(fut)
        else:
            self._loop.submit(Pending(self._dealers, rid, endpoint, frames, fut, None))
        return fut

    def connect(self, endpoint: str, wait: float = 0.05) -> None:
        """Start connecting to ``endpoint`` now, unless connected or connecting (thread-safe).

        Returns once the I/O thread has opened the connections (at most ``wait`` seconds), so a
        caller that then prepares its first request (pickles a class) does that work while the
        handshake runs, not before it. A bad address fails the first request, as it always did.
        """
        if self._closed or endpoint in self._dealers.peers or self.on_io_thread():
            return
        opened = threading.Event()

        def open_peer() -> None:
            try:
                self._dealers.peer(endpoint)
            except PeerUnavailable:  # a bad address: the first request reports it
                pass
            finally:
                opened.set()

        self._loop.submit(Call(open_peer))
        opened.wait(wait)

    def when_connected(self, endpoint: str, fn: Callable[[], None]) -> None:
        """Run ``fn()`` once the connection to ``endpoint`` is up: its security handshake succeeded
        and the requests queued for it were handed to libzmq (on the I/O thread; at once if it is up
        already, or not known there). A connection given up never runs it: its requests fail instead.
        Thread-safe; ``fn`` must not block or raise. For a caller that needs the peer proven, not a reply."""
        peer = self._dealers.peers.get(endpoint)
        if peer is not None and peer.up:  # (read off the I/O thread: a flag only it sets)
            fn()
            return

        def hook() -> None:
            peer = self._dealers.peers.get(endpoint)
            if peer is None or peer.up:
                fn()
            else:
                peer.up_hooks.append(fn)

        self.call_soon(hook)

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the I/O thread, soon (thread-safe; it must not block)."""
        if not self._closed:
            self._loop.submit(Call(fn, *args))

    def call_after_poll(self, fn: Callable[..., Any], *args: Any) -> None:
        """On the I/O thread only: run ``fn(*args)`` in a later turn, once the loop has polled its
        sockets (work in chunks that must not keep requests waiting; it must not block)."""
        self._loop.call_at(0.0, lambda _arg: fn(*args))

    def inflight(self, endpoint: str) -> int:
        """Requests to ``endpoint`` not answered yet."""
        return self._window.inflight.get(endpoint, 0)

    def send(
        self, endpoint: str, header: dict, body: bytes = b"\xc0", buffers: list | tuple = (), *, control: bool = False,
    ) -> None:
        """Send a one-way message (best effort, no reply expected).

        ``control``: on the peer's control connection, never queued behind calls (leases);
        dropped when that connection is not up or full.
        """
        if not self._closed:
            frames = [SIGNATURE, pack_header(header), body, *buffers]
            d = self._dealers
            self._loop.submit(Call(d.send_control if control else d.send_oneway, endpoint, frames))

    def forget(self, endpoint: str) -> None:
        """Close the connection to ``endpoint`` unless a request waits on it (e.g. a peer that never
        answered); a later request connects again. Thread-safe; does nothing for an unknown peer."""
        if not self._closed:
            self._loop.submit(Call(self._dealers.forget, endpoint))

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

    def call_fast(self, endpoint: str, rid: int, frames: list, expect: bytes, timeout: float | None = None) -> Any:
        """:meth:`call` with the frames made by the caller (``[SIGNATURE, header, body, *buffers]``,
        the header holding ``id: rid``): the reply's body frame if its header is ``expect`` (a known
        ``ok``, see :func:`transport._templates.ok_header`), else the split reply. Only from a thread
        other than the I/O thread (None there, or once closed: use :meth:`call`)."""
        if self._closed or self.on_io_thread():
            return None
        direct = self._direct(endpoint)
        with direct.lock:
            return direct.call_fast(rid, frames, expect, timeout)

    def _direct(self, endpoint: str) -> Direct:
        mine = getattr(self._local, "sockets", None)
        if mine is None:
            mine = self._local.sockets = {}
        direct = mine.get(endpoint)
        if direct is None or direct.closed:
            direct = Direct(self._recipe, self._counters, endpoint, lambda: self._closed)
            mine[endpoint] = direct
            with self._directs_lock:
                self._directs.add(direct)
        return direct

    # ------------------------------------------------------------ servers
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
        router = Router(self, self._servers, handler, keys, max_message_size, on_burst_end)
        done: Future = Future()
        self._loop.submit(Bind(self._servers, router, host, port, done))
        try:
            done.result()
        except zmq.ZMQError as exc:
            where = f"[{host}]" if ":" in host else host
            raise OSError(exc.errno, f"cannot listen on tcp://{where}:{port}: {zmq.strerror(exc.errno)}") from None
        return router

    # ------------------------------------------------------------- timers
    def add_timer(self, interval: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the I/O thread every ``interval`` seconds (it must not block)."""
        self._loop.submit(Call(self._loop.add_timer, [time.monotonic() + interval, interval, fn]))

    def remove_timer(self, fn: Callable[[], None]) -> None:
        timers = self._loop.timers
        self._loop.submit(Call(lambda: timers.__setitem__(slice(None), [t for t in timers if t[2] is not fn])))

    # ---------------------------------------------------------- lifecycle
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
        self._loop.stop()
        if "transport._lane_registry" in sys.modules:  # lanes were made: this node's (and closed loops') close
            sys.modules["transport._lane_registry"].sweep()
        if not self.on_io_thread():
            self._loop.thread.join(timeout)

    def _teardown(self) -> None:
        """On the I/O thread, once it stops: fail what waits, close every socket."""
        exc = NodeClosed("the mesh node was closed")
        self._dealers.teardown(exc)
        self._servers.teardown()
        self._zap.close()
        self._loop.abort_queued(exc)
        try:
            self.ctx.term()
        except Exception:
            pass
