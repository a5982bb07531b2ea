"""Socket recipes and the meaning of monitor events: the one place that sets ZeroMQ options.

Both DEALER drivers (the I/O thread's peers in :mod:`transport._dealers` and the
thread-owned :mod:`transport._direct`) build their sockets with
:class:`DealerRecipe` and read their monitors with :func:`monitor_events` and
:func:`connection_event`; servers bind with :func:`bind_router`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import zmq

from transport._errors import PeerAuthFailed, PeerUnavailable
from transport._log import log
from transport._edge import edge_triggered
from transport._security import Keys

__all__ = [
    "MONITOR_EVENTS",
    "Counters",
    "DealerRecipe",
    "Link",
    "bind_router",
    "close_monitored",
    "connection_event",
    "monitor_events",
    "parse_monitor_message",
    "recv",
    "send",
    "send_blocking",
]

# plain ints: pyzmq's enum members cost ~0.5 us per | on the hot path
NOBLOCK = int(zmq.NOBLOCK)
SNDMORE = int(zmq.SNDMORE)
NOBLOCK_MORE = NOBLOCK | SNDMORE
RCVMORE = int(zmq.RCVMORE)
EVENTS = int(zmq.EVENTS)
POLLIN = int(zmq.POLLIN)
POLLOUT = int(zmq.POLLOUT)
HWM = 10000  # messages queued per peer in libzmq before our own backlog takes over
ROUTER_LINGER = 2000  # ms: replies sent just before a shutdown still go out
# A refused or unreachable connection is retried (every 100 ms) this many times before the
# requests waiting on it fail: fast for a server that is down, tolerant of a link that just came back.
CONNECT_TRIES = 3

MONITOR_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_CONNECT_RETRIED
)
_MONITOR_EVENT = struct.Struct("=HI")
_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH,
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
)
_MECHANISM_MISMATCH = 0x11000002  # ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH


class Counters:
    """Bytes sent and received by a node's DEALERs (both drivers count here)."""

    __slots__ = ("sent", "received")

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0


class DealerRecipe:
    """How a node's DEALERs are made: keys, high-water marks, timeouts and heartbeats."""

    def __init__(
        self, ctx: zmq.Context, keys: Keys | None, *, connect_timeout: float,
        heartbeat_ivl: float, heartbeat_timeout: float, slack: float,
    ) -> None:
        self.ctx = ctx
        self.keys = keys
        self.connect_timeout = connect_timeout
        self.heartbeat_ivl = heartbeat_ivl
        self.heartbeat_timeout = heartbeat_timeout
        self.slack = slack  # s: how late a driver may notice a lost connection after libzmq did

    def heartbeat(self, sock: zmq.Socket, on: bool = True) -> None:
        """High-water marks, and ZMTP heartbeats for a connection that never backs up.

        A silent peer is dropped within ``heartbeat_timeout``: the last PING goes out at
        most ``heartbeat_ivl`` after the peer froze, so libzmq's timeout is what is left
        of ``heartbeat_timeout`` after one interval and the drivers' ``slack``.
        """
        sock.setsockopt(zmq.SNDHWM, HWM)
        sock.setsockopt(zmq.RCVHWM, HWM)
        if not on:
            return
        ivl = self.heartbeat_ivl
        timeout = max(0.1, self.heartbeat_timeout - ivl - self.slack)
        sock.setsockopt(zmq.HEARTBEAT_IVL, max(1, int(ivl * 1000)))
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(timeout * 1000))
        sock.setsockopt(zmq.HEARTBEAT_TTL, int(self.heartbeat_timeout * 1000))

    def connect(
        self, endpoint: str, *, heartbeat: bool, immediate: bool, sndhwm: int = 0,
    ) -> tuple[zmq.Socket, zmq.Socket]:
        """A DEALER connected to ``endpoint``, and its monitor socket.

        ``immediate``: queue messages only on completed connections (the I/O thread,
        which sends without blocking and keeps its own outbox); a thread that blocks
        in send must not set it, or a send after the peer went would block forever.

        Raises:
            PeerUnavailable: ``endpoint`` is not a valid address.
        """
        sock = self.ctx.socket(zmq.DEALER)
        sock.linger = 0
        if immediate:
            sock.immediate = 1
        sock.ipv6 = "[" in endpoint  # IPv6 peers only: ZMQ_IPV6 also changes how names resolve
        self.heartbeat(sock, heartbeat)
        if sndhwm:
            sock.setsockopt(zmq.SNDHWM, sndhwm)
        sock.setsockopt(zmq.CONNECT_TIMEOUT, int(min(self.connect_timeout, 2.0) * 1000))
        sock.setsockopt(zmq.HANDSHAKE_IVL, int(self.connect_timeout * 1000))
        if self.keys is not None:
            sock.curve_serverkey = self.keys.server_public
            sock.curve_publickey = self.keys.client_public
            sock.curve_secretkey = self.keys.client_secret
        mon = edge_triggered(sock.get_monitor_socket(MONITOR_EVENTS))  # (read only by its handler)
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            close_monitored(sock, mon)
            raise PeerUnavailable(endpoint, f"bad address: {exc}") from None
        return sock, mon


def bind_router(
    ctx: zmq.Context, host: str, port: int, max_message_size: int, keys: Keys | None, metadata: bytes = b"",
) -> tuple[zmq.Socket, int, str]:
    """A ROUTER bound on ``host:port`` (0: a free port); returns ``(socket, port, endpoint)``.

    ``metadata``: ZMTP metadata (``b"X-Name:value"``) its connections send their peers in the handshake.

    With ``keys`` it is a CURVE server in ZAP domain ``keys.domain`` (the caller
    allows the client key in :mod:`transport._zap`).
    """
    sock = ctx.socket(zmq.ROUTER)
    try:
        sock.linger = 0
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # No ZMTP heartbeat of our own: a connection whose input is stopped by back-pressure
        # cannot see PINGs, and dropping it for that is both wrong (the client is alive) and
        # the trigger of libzmq's "!_io_error" / "_input_stopped" asserts. Clients' control
        # and sync connections still ping us (libzmq answers without the GIL) and ask for a
        # TTL; dead clients' data connections go by TCP keepalive and TCP_MAXRT.
        sock.setsockopt(zmq.SNDHWM, HWM)
        # Nor a receive high-water mark: libzmq aborts ("!_io_error", stream_engine_base.cpp)
        # when a connection whose input is stopped by a full pipe is closed by the client and
        # a PING of that client is then decoded. With no limit the input never stops; the
        # I/O thread reads every request anyway (clients bound what they have in flight).
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 10)
        sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 2)
        sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, 5)
        sock.setsockopt(zmq.TCP_MAXRT, 30000)
        if max_message_size and max_message_size > 0:
            sock.setsockopt(zmq.MAXMSGSIZE, max_message_size)
        if metadata and hasattr(zmq, "METADATA"):  # libzmq 4.3+
            sock.setsockopt(zmq.METADATA, metadata)
        if keys is not None:
            sock.curve_server = True
            sock.curve_secretkey = keys.server_secret
            sock.curve_publickey = keys.server_public
            sock.zap_domain = keys.domain
        bind_host = f"[{host}]" if ":" in host else host
        if ":" in host:
            sock.ipv6 = True  # an IPv6 address (also "::", which then takes IPv4 too)
        if port == 0:
            port = sock.bind_to_random_port(f"tcp://{bind_host}", min_port=20000, max_port=60000, max_tries=200)
        else:
            sock.bind(f"tcp://{bind_host}:{port}")
    except BaseException:
        sock.close(0)
        raise
    return sock, port, f"tcp://{bind_host}:{port}"


def close_monitored(sock: zmq.Socket, mon: zmq.Socket, linger: int = 0) -> None:
    """Stop the monitor, then close both sockets."""
    try:
        sock.disable_monitor()
    except zmq.ZMQError:
        pass
    mon.close(0)
    sock.close(linger)


class Link:
    """What :func:`connection_event` knows of a connection (a peer of either driver)."""

    __slots__ = ("endpoint", "up", "retries", "hs_failures")

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.up = False  # the handshake succeeded
        self.retries = 0
        self.hs_failures = 0

    def handshake_succeeded(self) -> None:
        self.up = True
        self.retries = self.hs_failures = 0


def monitor_events(mon: zmq.Socket) -> Iterator[dict]:
    """The events waiting on a monitor socket, without blocking."""
    while True:
        try:
            frames = mon.recv_multipart(NOBLOCK)
        except zmq.Again:
            return
        yield parse_monitor_message(frames)


def parse_monitor_message(frames: list) -> dict:
    """Decode a socket-monitor event: (uint16 event, uint32 value) native-endian, then the endpoint.

    Ours, not ``zmq.utils.monitor``'s: that module imports ``zmq.asyncio`` and
    ``asyncio`` (~27 ms of every child server's start).
    """
    if len(frames) < 2 or len(frames[0]) != 6:
        raise ValueError("not a monitor event")
    event, value = _MONITOR_EVENT.unpack(frames[0])
    return {"event": event, "value": value, "endpoint": frames[1]}


def connection_event(conn: Link, msg: dict, secure: bool) -> Exception | None:
    """What a monitor event (other than a successful handshake) means for a connection.

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
        if conn.retries >= CONNECT_TRIES:
            return PeerUnavailable(endpoint, "connection refused or unreachable")
    return None


# The backend's own methods: pyzmq's sugar layer over them (a buffer check per frame, flags
# combined as enum members) costs ~2 µs a frame, several times libzmq's own work on a small message.
_send = zmq.backend.Socket.send
_recv = zmq.backend.Socket.recv


def send_blocking(sock: zmq.Socket, frames: list) -> None:
    """Send, blocking while the queue is full; frames past the third go zero-copy."""
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        _send(sock, frame, SNDMORE if i < last else 0, i < 3)


def send(sock: zmq.Socket, frames: list, small: int) -> None:
    """Send without blocking; the first ``small`` frames are copied, buffers go zero-copy.

    A zero-copy send of a small frame costs more than copying it (a Frame
    object per part), so only the trailing buffer frames use ``copy=False``.
    Only the first frame can fail with ``Again`` (a multipart message is queued whole or not at all).

    Raises:
        zmq.Again: the queue is full (nothing was sent).
    """
    if len(frames) == 4 and small >= 4:  # a reply without buffers, the common case: unrolled
        _send(sock, frames[0], NOBLOCK_MORE, True)
        _send(sock, frames[1], NOBLOCK_MORE, True)
        _send(sock, frames[2], NOBLOCK_MORE, True)
        _send(sock, frames[3], NOBLOCK, True)
        return
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        _send(sock, frame, NOBLOCK_MORE if i < last else NOBLOCK, i < small)


def recv(sock: zmq.Socket, small: int) -> list[Any]:
    """Receive one multipart message: the first ``small`` frames as bytes, buffers as zmq.Frame.

    Each part is read as a Frame, whose ``more`` says whether another follows: asking the
    socket (``RCVMORE``) makes pyzmq look the option up as an enum member, a Python call that
    costs more than the read itself (~4 µs a message of four frames when the caches are cold).

    Raises:
        zmq.Again: nothing to read (nothing was read).
    """
    frame = _recv(sock, NOBLOCK, False)
    frames = [frame.bytes if small else frame]
    while frame.more:
        frame = _recv(sock, 0, False)
        frames.append(frame.bytes if len(frames) < small else frame)
    return frames
