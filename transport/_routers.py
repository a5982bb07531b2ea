"""The server side on the I/O thread: bound ROUTERs, burst reads, the reply backlog.

* ROUTERs use ``ROUTER_MANDATORY`` and non-blocking sends: a reply to a vanished client is logged
  and dropped, never blocks the thread.
* A reply to a client whose libzmq queue is full waits in that client's backlog, at most
  ``BACKLOG_MAX`` replies; the retries back off while none go out.
* A malformed request gets a ``protocol`` error reply (see PROTOCOL.md); it never reaches the handler.
* Batches (1.4): a ``batch`` message is split here and each of its messages goes to the handler as
  if it had come alone (a malformed one fails only itself).
  A client that sent a batch gets its small replies batched too, when several are ready in one
  turn of the loop; a lone reply goes out at once, alone. The ROUTER announces batches in the
  ZMTP handshake (metadata ``X-Mesh-Batch``).
"""

from __future__ import annotations

import collections
import functools
import threading
from typing import Any, Callable

import zmq

from transport._errors import FrameError, VersionMismatch
from transport._framing import BATCH, BATCH_BYTES, BATCH_ITEM_MAX, BATCH_MAX, BATCH_PROPERTY, ONE_HEAD as _ONE_HEAD, SIGNATURE
from transport._framing import pack_header, split_batch, split_frames
from transport._future import ReplyFuture
from transport._log import log
from transport._loop import Call, Command, Loop
from transport._security import Keys
from transport._templates import ok_header as _ok_header
from transport._sockets import NOBLOCK, NOBLOCK_MORE, POLLIN, ROUTER_LINGER, bind_router, send
from transport._staging import BACKLOG_POLL_MIN, Staging
from transport._zap import Zap

__all__ = ["BACKLOG_MAX", "Handler", "Router", "Routers"]

# Replies held (in Python) for one client whose libzmq queue is full; past it the client is not
# reading and its replies are dropped (it lost them anyway when it went). Bounds a slow reader.
BACKLOG_MAX = 10000
_BURST = 1024  # requests (messages, or messages of batches) served from one ROUTER before the loop looks elsewhere
_BATCHERS_MAX = 65536  # clients remembered as reading batches (past it: forgotten, they get single replies)
_poll = zmq.zmq_poll
_get_ident = threading.get_ident
_recv = zmq.backend.Socket.recv
_send = zmq.backend.Socket.send

Handler = Callable[["Router", bytes, dict, Any, list], None]
RawHandler = Callable[["Router", bytes, bytes, bytes], Any]  # (router, identity, header bytes, body)


class Router:
    """A bound ROUTER socket and the handler of its requests.

    The handler runs on the I/O thread: it must not block. It answers with :meth:`reply`, from any
    thread; it returns True when it answered at once (the burst ends: the loop's next poll, which it
    makes anyway, finds any request that came meanwhile). ``on_burst_end``, if given, runs on the I/O
    thread after each burst of requests read in one go (for work the handler chose to batch).

    ``raw``, if a handler sets it (a :data:`RawHandler`), sees each plain request first (four frames: identity,
    signature, header, body), the header still packed: it returns True or False when it served the request as
    ``handler`` would have (True: answered at once), None to leave it to the usual path (the header parsed,
    then ``handler``). For a handler that knows its requests' bytes.
    """

    def __init__(
        self, node: Any, servers: Routers, handler: Handler, keys: Keys | None, max_message_size: int,
        on_burst_end: Callable[[], None] | None = None,
    ) -> None:
        self.node = node
        self._servers = servers
        self.handler = handler
        self.raw: RawHandler | None = None
        self.on_burst_end = on_burst_end
        self.keys = keys
        self.max_message_size = max_message_size
        self.port = 0
        self.endpoint = ""
        self.sock: zmq.Socket | None = None
        self.backlog: dict[bytes, collections.deque] = {}  # replies waiting for a client whose queue is full
        self.dropped = 0  # replies dropped for clients past BACKLOG_MAX
        self.received = 0  # bytes of the requests read (frames after the identity)
        self.sent = 0  # bytes of the replies handed to the socket or its backlog
        self.one = False  # the request being served came in one frame (PROTOCOL.md): reply_now answers so
        # batches: clients that sent one (they read batched replies), messages of batches not served
        # yet (FIFO, before the socket's next message), replies staged per client until the turn ends
        self.batchers: set[bytes] = set()
        self.pending: collections.deque = collections.deque()
        self.staged: dict[bytes, list] = {}
        self.batches_in = self.batches_out = 0  # batch messages read / sent (tests, status)
        # announced in the handshake (BATCH_PROPERTY): the largest batch this server reads (0: none)
        self.announce = BATCH_BYTES if max_message_size < 0 else min(BATCH_BYTES, max_message_size - 4096)
        if self.announce < 2 * BATCH_ITEM_MAX:
            self.announce = 0

    def reply(self, identity: bytes, header: dict, body: bytes = b"\xc0", buffers: list | tuple = ()) -> None:
        """Send a reply to ``identity``; thread-safe, never blocks."""
        servers = self._servers
        if identity in self.batchers and not buffers:
            raw = pack_header(header)
            if len(raw) + len(body) <= BATCH_ITEM_MAX:
                if threading.get_ident() == servers.loop.ident and not servers.loop.stepping:
                    servers.stage(self, identity, raw, body)
                else:
                    servers.loop.submit(Call(servers.stage, self, identity, raw, body))
                return
        else:
            raw = pack_header(header)
        frames = [identity, SIGNATURE, raw, body, *buffers]
        if threading.get_ident() == servers.loop.ident and not servers.loop.stepping:
            servers.send(self, frames)
        else:
            servers.loop.submit(Call(servers.send, self, frames))

    def reply_packed(self, identity: bytes, header: bytes, body: Any = b"\xc0", buffers: list | tuple = ()) -> None:
        """:meth:`reply` with the header already packed (a template, :mod:`transport._templates`)."""
        frames = [identity, SIGNATURE, header, body, *buffers]
        servers = self._servers
        if threading.get_ident() == servers.loop.ident and not servers.loop.stepping:
            servers.send(self, frames)
        else:
            servers.loop.submit(Call(servers.send, self, frames))

    def reply_now(self, identity: bytes, header: bytes, body: bytes) -> None:
        """:meth:`reply_packed` of a small reply without buffers, sent by the socket at once when this
        is the I/O thread and nothing is staged or held for the client (else as reply_packed does)."""
        servers = self._servers
        sock = self.sock
        if (sock is None or _get_ident() != servers.loop.ident or servers.loop.stepping or self.staged
                or (self.backlog and identity in self.backlog)):
            self.reply_packed(identity, header, body)
            return
        try:  # (Routers.send and _try, for an empty backlog and nothing staged: transport._sockets.send)
            _send(sock, identity, NOBLOCK_MORE, True)
        except zmq.ZMQError:  # the queue is full (held in the backlog) or the client went: as send says
            servers.send(self, [identity, SIGNATURE, header, body])
            return
        if self.one:  # the request came in one frame: so does its reply (pack_one, inlined)
            frame = SIGNATURE + len(header).to_bytes(2, "big") + header + body
            _send(sock, frame, NOBLOCK, True)  # (the rest of a message whose first frame went cannot fail)
            self.sent += len(frame)
            return
        _send(sock, SIGNATURE, NOBLOCK_MORE, True)
        _send(sock, header, NOBLOCK_MORE, True)
        _send(sock, body, NOBLOCK, True)
        self.sent += 5 + len(header) + len(body)

    def reply_ok(self, identity: bytes, rid: int, body: bytes) -> None:
        """A plain ``ok`` reply to request ``rid`` (header ``{"op": "ok", "re": rid}``, a template):
        :meth:`reply` without a header dict. Staged for a client that reads batches, as :meth:`reply`
        does; thread-safe, never blocks."""
        header = _ok_header(rid)
        servers = self._servers
        small = len(header) + len(body) <= BATCH_ITEM_MAX
        if _get_ident() == servers.loop.ident and not servers.loop.stepping:
            staged = self.staged.get(identity)  # staged this turn: no send to it since, so no backlog
            if staged is not None and small and len(staged) < 2 * BATCH_MAX - 2:
                staged += (header, body)  # (Routers.stage, inlined: the rest of a burst's replies)
            elif small and identity in self.batchers:
                servers.stage(self, identity, header, body)
            else:
                servers.send(self, [identity, SIGNATURE, header, body])
        elif small and identity in self.batchers:
            servers.loop.submit(Call(servers.stage, self, identity, header, body))
        else:
            servers.loop.submit(Call(servers.send, self, [identity, SIGNATURE, header, body]))

    def close(self) -> None:
        """Unbind and close the socket (idempotent)."""
        self._servers.loop.submit(Call(self._servers.close, self))


class Bind(Command):
    """Bind a router; ``done`` gets it, or the bind error."""

    __slots__ = ("servers", "router", "host", "port", "done")

    def __init__(self, servers: Routers, router: Router, host: str, port: int, done: ReplyFuture) -> None:
        self.servers, self.router, self.host, self.port, self.done = servers, router, host, port, done

    def run(self) -> None:
        try:
            self.servers.bind(self.router, self.host, self.port)
        except Exception as exc:
            self.done.set_exception(exc)
        else:
            self.done.set_result(self.router)

    def abort(self, exc: Exception) -> None:
        self.done.set_exception(exc)


class Routers(Staging):
    """Every ROUTER of one node, driven by its I/O thread."""

    def __init__(self, loop: Loop, ctx: zmq.Context, zap: Zap, warn: Callable[..., None]) -> None:
        self.loop = loop
        self.ctx = ctx
        self.zap = zap
        self.warn = warn
        self.routers: list[Router] = []
        self.backlogged: set[Router] = set()  # routers holding replies for full clients
        self.backlog_poll = BACKLOG_POLL_MIN  # ms until the next retry of held replies
        self._backlog_due = 0.0
        self._flush_scheduled = False
        self.staging: set[Router] = set()  # routers with staged replies
        loop.flushers.append(self.flush)

    def bind(self, router: Router, host: str, port: int) -> None:
        if router.keys is not None:
            zap = self.zap.open(self.ctx)
            if zap is not None:
                self.loop.add(zap, self.zap.on_readable)
            self.zap.allow(router.keys)
        metadata = f"{BATCH_PROPERTY}:{router.announce}".encode() if router.announce else b""
        sock, router.port, router.endpoint = bind_router(self.ctx, host, port, router.max_message_size, router.keys, metadata)
        router.sock = sock
        self.routers.append(router)
        self.loop.add(sock, functools.partial(self._on_request, router))  # (called with the poll's mask)

    def close(self, router: Router) -> None:
        sock = router.sock
        if sock is None:
            return
        router.sock = None
        router.backlog.clear()
        self.backlogged.discard(router)
        self.loop.remove(sock)
        sock.close(ROUTER_LINGER)
        if router in self.routers:
            self.routers.remove(router)

    def teardown(self) -> None:
        for router in list(self.routers):
            self.close(router)

    # ------------------------------------------------------------ requests
    def _on_request(self, router: Router, _mask: int = 0) -> None:
        sock = router.sock
        if sock is None:
            return
        try:
            self._read_requests(router, sock)
        finally:
            if router.on_burst_end is not None and _get_ident() == self.loop.ident:  # (not after a hand-off)
                try:
                    router.on_burst_end()
                except Exception:
                    log.exception("burst-end handler failed")

    def _read_requests(self, router: Router, sock: zmq.Socket) -> None:
        pending = router.pending
        handler = router.handler
        loop = self.loop
        on_thread = loop.on_thread
        raw = router.raw
        ready = None  # [(sock, POLLIN)] once a second message is looked for (a sync call's burst has one)
        budget = _BURST
        polled = True  # the loop's poll found the first one
        while budget > 0:
            if pending:  # the rest of a batch comes before the socket's next message
                identity, item = pending.popleft()
                budget -= 1
                router.one = False
                if type(item) is not tuple:
                    self._malformed(router, identity, item)
                    continue
                try:
                    handler(router, identity, item[0], item[1], [])
                except Exception:
                    log.exception("request handler failed")
                if not on_thread():  # handed off: the new I/O thread serves the rest, in order
                    if pending:
                        self.loop.submit(Call(self._on_request, router))
                    return
                continue
            # zmq_poll, not get(EVENTS): pyzmq makes an enum of the option
            if not polled:
                if ready is None:
                    ready = [(sock, POLLIN)]
                if not _poll(ready, 0):
                    return
            polled = False
            try:  # (transport._sockets.recv, inlined: identity, signature, header, body as bytes)
                identity = _recv(sock, NOBLOCK, True)  # (as bytes: a ROUTER's message has a part after it)
            except zmq.Again:
                return
            frame = _recv(sock, 0, False)  # a plain request's four frames unrolled: no list, no sum
            sig, head, body = frame.bytes, None, None
            router.one = False
            if frame.more:
                frame = _recv(sock, 0, False)
                head = frame.bytes
                if frame.more:
                    frame = _recv(sock, 0, False)
                    body = frame.bytes
            elif len(sig) > _ONE_HEAD and sig[:5] == SIGNATURE:  # a one-frame request (split_one, inlined)
                end = _ONE_HEAD + (sig[5] << 8 | sig[6])
                if end < len(sig):
                    router.received += len(sig)
                    head, body, sig = sig[_ONE_HEAD:end], sig[end:], SIGNATURE
                    router.one = True  # (reply_now answers it in one frame too)
            budget -= 1
            if body is None or frame.more:  # any other layout: the parts after the fourth as Frames
                frames = [part for part in (identity, sig, head, body) if part is not None]
                while frame.more:
                    frame = _recv(sock, 0, False)
                    frames.append(frame)
                router.received += sum(map(len, frames)) - len(identity)
            else:
                if not router.one:
                    router.received += len(sig) + len(head) + len(body)
                if raw is not None and sig == SIGNATURE:
                    try:
                        answered = raw(router, identity, head, body)
                    except Exception:
                        log.exception("request handler failed")
                        answered = False
                    if answered is not None:  # served (as the handler serves, below)
                        if _get_ident() != loop.ident:
                            return
                        if answered is True:
                            break
                        continue
                frames = [identity, sig, head, body]
            try:
                header, body, buffers = split_frames(frames[1:])
                if header["op"] == BATCH:
                    items = split_batch(body)
                    router.batches_in += 1
                    if len(router.batchers) >= _BATCHERS_MAX:
                        router.batchers.clear()
                    router.batchers.add(identity)
                    pending.extend([(identity, item) for item in items])
                    continue
            except FrameError as exc:
                self._malformed(router, identity, exc)
                continue
            try:
                answered = handler(router, identity, header, body, buffers)
            except Exception:
                log.exception("request handler failed")
                answered = None
            if _get_ident() != loop.ident:  # the handler handed the loop off (Loop.hand_off): leave it
                return
            if answered is True:  # answered at once (a sync call): the loop's next poll looks for more
                break
        if pending:  # out of budget: serve the rest after the loop's other work
            self.loop.submit(Call(self._on_request, router))

    def _malformed(self, router: Router, identity: bytes, exc: Exception) -> None:
        if not isinstance(exc, VersionMismatch):
            self.warn("malformed", "malformed request on %s: %s", router.endpoint, exc)
        error = {"op": "err", "re": None, "kind": "protocol", "msg": str(exc)}
        self.send(router, [identity, SIGNATURE, pack_header(error), b"\xc0"])

    # ------------------------------------------------------------- replies
    def send(self, router: Router, frames: list) -> None:
        """Send a reply, or hold it behind the client's backlog (on the I/O thread)."""
        if router.staged and frames[0] in router.staged:  # keep order behind what is staged for it
            self._flush_staged(router, frames[0])
        router.sent += sum(map(len, frames)) - len(frames[0])
        backlog = router.backlog.get(frames[0])
        if backlog is not None:  # keep order behind what waits for this client
            if len(backlog) >= BACKLOG_MAX:  # the client does not read: past this bound its replies
                # are dropped (a client that went lost them anyway; one that reads again gets the newer ones)
                router.dropped += 1
                if router.dropped == 1 or router.dropped % 10000 == 0:
                    self.warn("backlog", "a client of %s does not read its replies: %d dropped so far "
                              "(at most %d held per client)", router.endpoint, router.dropped, BACKLOG_MAX)
                return
            backlog.append(frames)
            return
        if not self._try(router, frames):
            router.backlog[frames[0]] = collections.deque([frames])
            self.backlogged.add(router)
            self.backlog_poll = BACKLOG_POLL_MIN
            self._schedule_flush()

    def _try(self, router: Router, frames: list) -> bool:
        """Send a reply; False if the client's queue is full. Vanished clients' replies are dropped."""
        sock = router.sock
        if sock is None:
            return True
        try:
            send(sock, frames, 4)
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                log.debug("dropping a reply: client gone")
            else:
                self.warn("reply", "dropping a reply: %s", exc)
        return True
