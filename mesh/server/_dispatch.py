"""The agent server's request handling: the op table, and the rooms each op is served by.

Requests arrive on the I/O thread (:meth:`Servicer.handle`, which must not block); object code
runs on the :class:`~mesh.server._workers.WorkerPool`. The rooms:

* :mod:`~mesh.server._checks`: the header check (``badrequest``, before anything changes);
* :mod:`~mesh.server._objects`: create / delete / lookup / getattr;
* :mod:`~mesh.server._mailbox` and :mod:`~mesh.server._calls`: an actor's calls, one at a time;
* :mod:`~mesh.server._results` (+ :mod:`~mesh.server._holders`): async results, fetches, release;
* :mod:`~mesh.server._sessions`: leases; :mod:`~mesh.server._admin`: ping / status.

A malformed request is answered ``badrequest``; a bug in an op handler is logged with its
traceback and answered ``internal``: a server never dies from what a peer sends it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import transport
from mesh._core import ids, tracing, wire
from mesh._core.wire import Entry
from mesh.server._aio import Aio
from mesh.server._admin import info as admin_info, status as admin_status
from mesh.server._calls import CallRunner, ok
from mesh.server._checks import check_header
from mesh.server._checkpoint import Checkpoints
from mesh.server._classes import ClassResolver
from mesh.server._mailbox import Call
from mesh.server._objects import Objects
from mesh.server._results import Results, shut_down
from mesh.server._sessions import Sessions
from mesh.server._store import ResultPool
from mesh.server._streams import Streams
from mesh.server._workers import WorkerPool

__all__ = ["Servicer"]

log = logging.getLogger("mesh.server")

Reply = Callable[[Entry], None]
# still served while shutting down
_WHILE_CLOSING = frozenset((wire.PING, wire.STATUS, wire.RESULT, wire.STREAM, wire.STREAM_ACK, wire.CANCEL))


class Servicer:
    """Handles the requests of one agent server."""

    def __init__(
        self,
        *,
        name: str,
        capacity: int,
        pool: ResultPool,
        resolver: ClassResolver,
        max_message_size: int,
        on_stop: Callable[[], None],
        lease_ttl: float = 30.0,
        pool_url: str | None = None,
        state_store: str | None = None,
        secret: bytes | None = None,
    ) -> None:
        self.name = name
        self.capacity = capacity
        self.pool = pool
        self.max_message_size = max_message_size
        self.on_stop = on_stop
        self.pool_url = pool_url  # a Redis pool that consumers may read while this server is down
        self.started = time.time()
        self.instance = ids.uuid4_hex()  # tells fetches for an earlier run of this server apart
        self.accepting = True
        self.workers = WorkerPool(capacity, name=f"mesh-{name}")
        self.results = Results(pool, name)
        self.streams = Streams(budget=getattr(pool, "max_bytes", None) or 1 << 30)
        self.results.on_release = self.streams.drop  # no holder left: a stream's generator stops
        self.results.streams_open = lambda: self.streams.states  # (a release of plain tasks skips it then)
        self.calls = CallRunner(self.workers, self.results, lambda: self.accepting, Aio(name), self.streams)
        self.checkpoints = Checkpoints(state_store, secret, self.instance)
        self.calls.checkpoint = self.checkpoints.after_call
        self.objects = Objects(self.calls, resolver, self._created, self.checkpoints)
        self.sessions = Sessions(lease_ttl)
        self.router: Any = None  # the bound ROUTER (its byte counters), set by the host
        self.http_url: str | None = None  # the HTTP edge's base URL, when it serves one
        self._ops: dict[str, Callable[[dict, Any, list, Reply], None]] = {
            wire.CALL: self._op_call,
            wire.RESULT: self._op_result,
            wire.CREATE: self.objects.create,
            wire.CREATE_MANY: self.objects.create_many,
            wire.GETATTR: self.objects.getattr,
            wire.DELETE: self.objects.delete,
            wire.PING: self._op_ping,
            wire.STATUS: self._op_status,
            wire.RELEASE: self._op_release,
            wire.LEASE: self._op_lease,
            wire.BYE: self._op_bye,
            wire.LOOKUP: self._op_lookup,
            wire.STOP: self._op_stop,
            wire.STREAM: self._op_stream,
            wire.STREAM_ACK: self._op_stream_ack,
            wire.STREAM_STOP: self._op_stream_stop,
            wire.CANCEL: self._op_cancel,
            wire.BATCH: self._op_batch,
        }

    @property
    def io_ident(self) -> int | None:
        return self.calls.io_ident

    @io_ident.setter
    def io_ident(self, ident: int | None) -> None:
        self.calls.io_ident = ident

    @property
    def start_ready(self) -> Callable[[], None]:
        """Called after each burst of requests: start the actors it made runnable."""
        return self.calls.start_ready

    # ---------------------------------------------------------------- entry
    def handle(self, router: transport.Router, identity: bytes, header: dict, body: Any, buffers: list) -> None:
        """Serve one request (I/O thread; never blocks, never raises)."""
        rid = header.get("id")
        op_name = header.get("op")

        def reply(entry: Entry) -> None:
            if rid is not None:
                router.reply(identity, {**entry[0], "re": rid}, entry[1], entry[2])

        op = self._ops.get(op_name)  # type: ignore[arg-type]
        if op is None:
            reply(wire.err_entry(wire.K_BADREQUEST, f"unknown op {op_name!r}"))
            return
        problem = check_header(header)
        if problem is not None:  # before anything changes: a refused request leaves no trace
            reply(wire.err_entry(wire.K_BADREQUEST, f"malformed {op_name} request: {problem}"))
            return
        sess = header.get("sess")
        if sess is not None:
            self.sessions.touch(sess)
        if not self.accepting and op_name not in _WHILE_CLOSING:
            reply(wire.err_entry(wire.K_UNAVAILABLE, "server is shutting down"))
            return
        try:
            op(header, body, buffers, reply)
        except Exception as exc:  # a bug here, not the peer's: the header was checked whole above
            log.exception("failed to serve %s", op_name)
            reply(wire.err_entry(wire.K_INTERNAL, f"the server failed to serve {op_name}: {type(exc).__name__}: {exc}"))

    # ---------------------------------------------------------------- calls
    def _op_call(self, header: dict, body: Any, buffers: list, reply: Reply) -> None:
        # the header was checked whole by check_header(): nothing below can fail half-way
        keep = bool(header.get("keep"))
        task = header.get("task")
        sess = header.get("sess") if keep else None
        call = Call(reply, header["m"], body, buffers, header.get("chain"), task, keep, sess, tracing.carrier(header))
        if keep:
            self.results.expect(task, sess)
            if header.get("stream"):
                self.streams.open(task)  # readers may subscribe before it runs
        actor = self.objects.get(header["obj"])
        if actor is None:
            why = f"no object {header['obj']!r} on this server (deleted, never created, or the server restarted)"
            self.calls.unrun(call, wire.err_entry(wire.K_NOTFOUND, why))
            return
        dl = header.get("dl")
        if task is not None or dl is not None:  # cancellable: a task id, or a deadline (seconds left)
            stopped = self.calls.cancels.arrive(call, actor, task, dl, header.get("sess"))
            if stopped is not None:  # cancelled before it arrived, or out of time: it never runs
                self.calls.unrun(call, stopped)
                return
        self.calls.admit(actor, call, True)

    def _op_cancel(self, header: dict, body: Any, buffers: list, reply: Reply) -> None:
        why = wire.WHY_DEADLINE if header.get("why") == wire.WHY_DEADLINE else wire.WHY_CANCEL
        cancels = self.calls.cancels
        if header.get("all"):  # every call of the sender's session (its client was interrupted)
            reply(ok(cancels.cancel_session(header["sess"], why)))
        else:  # an unknown or finished task: False, nothing changes
            reply(ok(cancels.cancel(header["task"], why)))

    def _op_batch(self, header: dict, body: Any, buffers: list, reply: Reply) -> None:
        # the transport splits batches (transport._framing.split_batch): one that gets here was
        # nested in a batch or came another way; nothing in it is served
        reply(wire.err_entry(wire.K_BADREQUEST, "a batch cannot be served as one request (nested batch?)"))

    def _op_result(self, header: dict, body: Any, buffers: list, reply: Reply) -> None:
        # a task of an earlier run of this server will never arrive: no grace for it
        self.results.when_done(header["task"], reply, header.get("inst") in (None, self.instance))

    # ---------------------------------------------------------------- streams
    def _op_stream(self, header: dict, body: Any, buffers: list, reply: Reply) -> None:
        self.streams.subscribe(header, reply)

    def _op_stream_ack(self, header: dict, body: Any, buffers: list, reply: Reply) -> None:
        self.streams.ack(header)

    def _op_stream_stop(self, header: dict, body: Any, buffers: list, reply: Reply) -> None:
        task = header["task"]
        stopped = self.streams.stop(task)
        stopped = self.calls.cancels.cancel(task) or stopped  # and what its generator started (the cascade)
        reply(ok({"stopped": stopped}))

    def local_result(self, task: str, inst: str | None = None) -> transport.ReplyFuture:
        """Fetch a result of this server from inside its own process (no network)."""
        return self.results.local_result(task, inst in (None, self.instance))

    def _op_release(self, header: dict, body: Any, buffers: list, reply: Reply) -> None:
        self.results.release_items(header["tasks"], header.get("sess"))

    def expire_early(self) -> None:
        """Answer fetches whose task never arrived within the grace period (a timer, I/O thread)."""
        self.results.expire_early()
        self.streams.expire_early()

    # -------------------------------------------------------------- objects
    def _created(self) -> dict[str, Any]:
        """What a ``create`` reply tells the caller about this server, besides the object."""
        return {
            "max_message_size": self.max_message_size,
            "lease_ttl": self.sessions.lease_ttl,
            "pool": self.pool_url,
            "inst": self.instance,
            "max_len": getattr(self.pool, "max_len", None),
            "max_expire_time": getattr(self.pool, "max_expire_time", None),
        }

    def _op_lookup(self, header: dict, body: Any, buffers: list, reply: Reply) -> None:
        name = header["name"]
        actor = self.objects.lookup(name)
        if actor is None:
            reply(wire.err_entry(wire.K_NOTFOUND, f"no object named {name!r} on this server"))
            return
        reply(ok({
            "obj": actor.id, "cls": actor.cls_name, "methods": getattr(type(actor.obj), "_mesh_methods", {}),
            "pool": self.pool_url, "inst": self.instance,
            **(self.checkpoints.reply_fields(actor.durable) if actor.durable is not None else {}),
        }))

    # ------------------------------------------------------------ sessions
    def _op_lease(self, header: dict, body: Any, buffers: list, reply: Reply) -> None:
        pass  # handle() already noted the session as alive

    def _op_bye(self, header: dict, body: Any, buffers: list, reply: Reply) -> None:
        sess = header.get("sess")
        if sess is not None:
            self.sessions.bye(sess)
            self._end_session(sess, "its creator exited")

    def sweep(self) -> None:
        """Drop the objects of clients not heard from for ``lease_ttl`` seconds (I/O thread timer)."""
        for sess in self.sessions.expired():
            self._end_session(sess, f"its creator was not heard from for {self.sessions.lease_ttl:g} s")
        self.results.prune()
        if self.streams.states:
            self.streams.prune(lambda task: self.pool.get(task) is not None)
        if self.checkpoints.due():
            actors = [a for a in self.objects.actors.values() if a.durable is not None]
            self.workers.submit(lambda: self.checkpoints.touch(actors))

    def _end_session(self, sess: str, why: str) -> None:
        self.objects.end_session(sess, why)
        self.streams.end_session(sess)  # its subscriptions: nobody reads them any more
        self.calls.cancels.cancel_orphans()  # their running calls, and what those started
        self.results.end_session(sess)

    # -------------------------------------------------------------- admin
    def info(self) -> dict[str, Any]:
        return admin_info(
            name=self.name, capacity=self.capacity, load=self.workers.load, agents=len(self.objects),
            started=self.started, max_message_size=self.max_message_size, reports=len(self.objects.reporting),
        )

    def _op_ping(self, header: dict, body: Any, buffers: list, reply: Reply) -> None:
        reply(ok(self.info()))

    def status(self) -> dict[str, Any]:
        """What ``status`` answers (plain data): also read by the HTTP edge (``/healthz``, ``/metrics``)."""
        router = self.router
        status = admin_status(
            self.info(), list(self.objects.actors.values()), self.pool, self.calls.aio.running, self.workers.running,
            calls=self.calls.stats.snapshot(), bytes_in=getattr(router, "received", 0),
            bytes_out=getattr(router, "sent", 0), http=self.http_url,
        )
        if self.checkpoints.opened or self.checkpoints.restorable:
            status["state_store"] = self.checkpoints.where
            status["restorable"] = self.checkpoints.restorable[:1000]
        return status

    def _op_status(self, header: dict, body: Any, buffers: list, reply: Reply) -> None:
        reply(ok(self.status()))

    def _op_stop(self, header: dict, body: Any, buffers: list, reply: Reply) -> None:
        self.stop_answered = True  # close() says so: the socket stays open until the reply is out
        reply(ok(None))
        threading.Thread(target=self.on_stop, name="mesh-stop", daemon=True).start()

    # ------------------------------------------------------------ shutdown
    def close(self, grace: float = 5.0) -> bool:
        """Stop accepting; fail queued calls; let running ones finish within ``grace``.

        Returns:
            True if calls were running or queued, or a ``stop`` was answered: their replies have just been sent.
        """
        self.accepting = False
        aio = self.calls.aio
        busy = self.workers.running > 0 or self.workers.queued > 0 or aio.running > 0
        queued = self.objects.fail_queued("server shut down")
        for call in queued:
            self.calls.unrun(call, shut_down())
        deadline = time.monotonic() + grace
        cancels = self.calls.cancels
        # cancelled sync methods that ignore mesh.cancelled() were answered already: not waited for
        while not self.workers.wait_idle(min(0.05, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline or self.workers.running <= cancels.stuck():
                break
        # coroutine calls get what is left of the grace, then are cancelled: their callers get
        # ServerUnavailable, as queued calls do
        aio.close(max(0.0, deadline - time.monotonic()))
        self.workers.close(0.0 if cancels.stuck() else 0.5)
        cancels.close()
        self.results.close()
        return busy or bool(queued) or getattr(self, "stop_answered", False)
