"""The agent server's request handling: objects, mailboxes, tasks, results.

Requests arrive on the I/O thread (:meth:`Servicer.handle`, which must not
block); object code runs on the :class:`~mesh._workers.WorkerPool`.

Actor semantics: each object has a mailbox; its calls run one at a time, in
arrival order. One exception prevents the A->B->A deadlock: while a call of
call chain *C* waits on another mesh task, a new call of the same chain *C*
may enter the object (re-entrancy along one call tree, as in Orleans).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import traceback
import uuid
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import transport
from mesh import _context
from mesh._classes import ClassResolver
from mesh._errors import RemoteError, ResultExpired, ServerUnavailable
from mesh._pool import Entry, ResultPool
from mesh._workers import WorkerPool

__all__ = ["Servicer"]

log = logging.getLogger("mesh.server")

_EARLY_GRACE = 5.0  # seconds a fetch waits for a task this server has not seen yet
_SEEN_MAX = 100_000  # task ids remembered, to tell "gone" from "not arrived yet"
_REFS_MAX = 100_000  # shared tasks whose holders are tracked; past this the oldest wait for expiry
_EARLY_MAX = 10_000  # fetches waiting for unseen tasks; past this they are answered at once
_READY_MAX = 8  # actors made runnable by one burst of requests before their workers are woken
_BATCH = 64  # calls of one actor run back to back on one worker before yielding it
PUSH_LIMIT = 64 * 1024  # async results up to this size are pushed to the caller with the reply
_NIL = b"\xc0"  # msgpack nil

# Caps on header fields (a request over one is refused with `badrequest` before it changes anything).
ID_MAX = 128  # characters of an id: sess, obj, task, chain, inst, the refs of a release
NAME_MAX = 256  # characters of a method or attribute name (`m`) and of a registered object name
CLS_MAX = 1024  # characters of a class reference `module:qualname`
LIST_MAX = 4096  # items of a release's `tasks`, and refs in one item's children
_PY = f"{os.sys.version_info[0]}.{os.sys.version_info[1]}"


def _text(header: dict, key: str, cap: int, required: bool = False, empty: bool = True) -> str | None:
    value = header.get(key)
    if value is None:
        if required:
            return f"'{key}' is missing"
        return None
    if type(value) is not str:
        return f"'{key}' must be a string, not {type(value).__name__}"
    if len(value) > cap:
        return f"'{key}' is {len(value)} characters long, over the limit of {cap}"
    if not empty and not value:
        return f"'{key}' must not be empty"
    return None


def _flag(header: dict, key: str) -> str | None:
    value = header.get(key)
    if value is None or type(value) in (bool, int):
        return None
    return f"'{key}' must be 0 or 1, not {type(value).__name__}"


def _release_item(item: Any) -> str | None:
    if type(item) is str:
        return None if len(item) <= ID_MAX else f"a task id in 'tasks' is over {ID_MAX} characters"
    if type(item) is not list or len(item) != 3:
        return "an item of 'tasks' must be a task id or [task, ref, [child refs]]"
    task, ref, children = item
    if type(task) is not str or type(ref) is not str or type(children) is not list:
        return "an item of 'tasks' must be a task id or [task, ref, [child refs]]"
    if len(task) > ID_MAX or len(ref) > ID_MAX:
        return f"an id in 'tasks' is over {ID_MAX} characters"
    if len(children) > LIST_MAX:
        return f"an item of 'tasks' names {len(children)} child refs, over the limit of {LIST_MAX}"
    for child in children:
        if type(child) is not str or len(child) > ID_MAX:
            return f"a child ref in 'tasks' must be a string of at most {ID_MAX} characters"
    return None


def check_header(header: dict) -> str | None:
    """What is wrong with a request's header (types and sizes of every field it uses), or None.

    Run before a request changes anything, so that a refused request leaves no
    trace (no pending task, no session). Keys this server does not use are ignored.
    """
    op = header.get("op")
    if type(header.get("id")) not in (int, type(None)):
        return "'id' must be an integer"
    problem = _text(header, "sess", ID_MAX)
    if problem:
        return problem
    if op == "call":
        problem = (
            _text(header, "obj", ID_MAX, required=True) or _text(header, "m", NAME_MAX, required=True)
            or _text(header, "chain", ID_MAX) or _text(header, "task", ID_MAX) or _flag(header, "keep")
        )
        if not problem and header.get("keep") and header.get("task") is None:
            problem = "an async call (keep: 1) needs a string 'task'"
    elif op == "result":
        problem = _text(header, "task", ID_MAX, required=True) or _text(header, "inst", ID_MAX)
    elif op == "create":
        problem = (
            _text(header, "obj", ID_MAX, required=True, empty=False) or _text(header, "cls", CLS_MAX, required=True, empty=False)
            or _text(header, "name", NAME_MAX) or _flag(header, "detached")
        )
    elif op in ("getattr",):
        problem = _text(header, "obj", ID_MAX, required=True) or _text(header, "m", NAME_MAX, required=True)
    elif op == "delete":
        problem = _text(header, "obj", ID_MAX, required=True)
    elif op == "lookup":
        problem = _text(header, "name", NAME_MAX, required=True)
    elif op == "release":
        tasks = header.get("tasks")
        if type(tasks) is not list:
            problem = "'tasks' must be a list"
        elif len(tasks) > LIST_MAX:
            problem = f"'tasks' has {len(tasks)} items, over the limit of {LIST_MAX}"
        else:
            problem = next(filter(None, map(_release_item, tasks)), None)
    return problem


class _Call:
    __slots__ = ("reply", "method", "body", "buffers", "chain", "task", "keep", "sess")

    def __init__(
        self, reply: Callable, method: str, body: Any, buffers: list, chain: Any, task: Any, keep: bool,
        sess: str | None = None,
    ) -> None:
        self.reply = reply
        self.method = method
        self.body = body
        self.buffers = buffers
        self.chain = chain
        self.task = task
        self.keep = keep
        self.sess = sess  # the caller's session: while it lives (and holds the task), the result is held


class _Actor:
    __slots__ = ("id", "obj", "cls_name", "lock", "queue", "running", "blocked", "served", "session", "created", "failed", "name")

    def __init__(self, object_id: str, cls_name: str, session: Any, name: str | None = None) -> None:
        self.id = object_id
        self.obj: Any = None
        self.cls_name = cls_name
        self.lock = threading.Lock()
        self.queue: deque[_Call] = deque()
        self.running = 1  # the constructor runs first
        self.blocked: dict[Any, int] = {}  # chain -> running calls of it that wait
        self.served = 0
        self.session = session
        self.created = time.time()
        self.failed: str | None = None
        self.name = name  # registered name of a detached object


def _error(kind: str, msg: str, exc_type: str = "", tb: str = "") -> Entry:
    header: dict[str, Any] = {"op": "err", "kind": kind, "msg": msg}
    if exc_type:
        header["type"] = exc_type
    if tb:
        header["tb"] = tb
    return header, _NIL, []


def _expired(task: str) -> Entry:
    return _error(
        "expired",
        f"no result for task {task} on this server: it expired (max_expire_time / max_len), "
        "was released, or never existed",
    )


def _shut_down() -> Entry:
    return _error("unavailable", "server shut down before running this call")


def _remote_error(exc: BaseException) -> Entry:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return _error("remote", str(exc), type(exc).__name__, tb)


def _call_error(exc: BaseException) -> Entry:
    """The reply for a method that raised: mesh errors from further down a call chain keep their kind.

    A ``RemoteError`` keeps the type, message and traceback of where it started;
    ``ResultExpired`` and ``ServerUnavailable`` (a future the method read, or a
    server it called) reach the caller as themselves, not wrapped.
    """
    if isinstance(exc, RemoteError):
        here = "".join(traceback.format_tb(exc.__traceback__))
        tb = exc.remote_traceback.rstrip() + "\n\nre-raised on the way back:\n" + here
        return _error("remote", exc.remote_message, exc.remote_type, tb)
    if isinstance(exc, ResultExpired):
        return _error("expired", str(exc), "ResultExpired", "".join(traceback.format_exception(exc)))
    if isinstance(exc, ServerUnavailable):
        return _error("unavailable", str(exc), "ServerUnavailable", "".join(traceback.format_exception(exc)))
    return _remote_error(exc)


def _ok(value: Any) -> Entry:
    try:
        body, buffers = transport.encode(value)
    except transport.CodecError as exc:
        return _error("remote", f"the result cannot be sent back: {exc}", "SerializationError")
    return {"op": "ok"}, body, [b if type(b) is bytes else bytes(b) for b in buffers]


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
    ) -> None:
        self.name = name
        self.capacity = capacity
        self.pool = pool
        self.resolver = resolver
        self.max_message_size = max_message_size
        self.on_stop = on_stop
        self.workers = WorkerPool(capacity, name=f"mesh-{name}")
        self.actors: dict[str, _Actor] = {}
        self._pending: dict[str, list[Callable[[Entry], None]]] = {}
        self._discard: set[str] = set()  # released before they finished
        # actors made runnable while the I/O thread reads a burst of requests: their workers start
        # after the burst (or every _READY_MAX), so a worker wakes to several calls, not one each
        self._ready: list[tuple[_Actor, _Call]] = []
        self.io_ident: int | None = None  # the I/O thread, set by the server
        self._seen: OrderedDict[str, None] = OrderedDict()  # recent task ids: gone, not "not yet here"
        self._early: dict[str, float] = {}  # fetches waiting for their task to arrive -> deadline
        # shared task -> [holder refs not yet gone, refs gone before anyone named them, owner's session]
        # (see mesh._future)
        self._refs: OrderedDict[str, list[Any]] = OrderedDict()
        # session -> tasks its caller still holds (running or stored): their results are "held" (bounded
        # by bytes only) until released; when the session ends (bye, lease timeout) they go with it,
        # unless a copy passed on still holds them (then they are loose: max_len / max_expire_time)
        self._held: dict[str, set[str]] = {}
        self.names: dict[str, str] = {}  # registered name -> object id (detached objects)
        self.sessions: dict[str, float] = {}  # client session -> last heard (monotonic)
        self.lease_ttl = lease_ttl
        self.pool_url = pool_url  # a Redis pool that consumers may read while this server is down
        # Results are answered from memory; a Redis copy (results this server no longer has in
        # memory, e.g. of an earlier run) is read off the I/O thread.
        self._stored = getattr(pool, "get_stored", None)
        self._pool_executor = None if self._stored is None else ThreadPoolExecutor(4, thread_name_prefix=f"mesh-pool-{name}")
        self._lock = threading.Lock()
        self.started = time.time()
        self.instance = uuid.uuid4().hex  # tells fetches for an earlier run of this server apart
        self.accepting = True
        self._ops: dict[str, Callable] = {
            "call": self._op_call,
            "result": self._op_result,
            "create": self._op_create,
            "getattr": self._op_getattr,
            "delete": self._op_delete,
            "ping": self._op_ping,
            "status": self._op_status,
            "release": self._op_release,
            "lease": self._op_lease,
            "bye": self._op_bye,
            "lookup": self._op_lookup,
            "stop": self._op_stop,
        }

    # ---------------------------------------------------------------- entry
    def handle(self, router: transport.Router, identity: bytes, header: dict, body: Any, buffers: list) -> None:
        """Serve one request (I/O thread; never blocks, never raises)."""
        rid = header.get("id")

        def reply(entry: Entry) -> None:
            if rid is not None:
                router.reply(identity, {**entry[0], "re": rid}, entry[1], entry[2])

        op = self._ops.get(header["op"])
        if op is None:
            reply(_error("badrequest", f"unknown op {header['op']!r}"))
            return
        problem = check_header(header)
        if problem is not None:  # before anything changes: a refused request leaves no trace
            reply(_error("badrequest", f"malformed {header['op']} request: {problem}"))
            return
        sess = header.get("sess")
        if sess is not None:
            self.sessions[sess] = time.monotonic()
        if not self.accepting and header["op"] not in ("ping", "status", "result"):
            reply(_error("unavailable", "server is shutting down"))
            return
        try:
            op(header, body, buffers, reply)
        except (KeyError, TypeError, ValueError) as exc:
            reply(_error("badrequest", f"malformed {header['op']} request: {type(exc).__name__}: {exc}"))
        except Exception as exc:  # never let a peer kill the server
            log.exception("failed to serve %s", header.get("op"))
            reply(_remote_error(exc))

    # ------------------------------------------------------------- objects
    def _op_create(self, header: dict, body: Any, buffers: list, reply: Callable) -> None:
        object_id, cls_ref = header["obj"], header["cls"]
        if not isinstance(object_id, str) or not isinstance(cls_ref, str) or not object_id:
            raise TypeError("'obj' and 'cls' must be non-empty strings")
        name = header.get("name")
        if name is not None and not isinstance(name, str):
            raise TypeError("'name' must be a string")
        session = None if header.get("detached") else header.get("sess")
        actor = _Actor(object_id, cls_ref.rpartition(":")[2], session, name)
        with self._lock:
            if object_id in self.actors:
                reply(_error("badrequest", f"object id {object_id!r} already exists"))
                self._drop_body(body, buffers)
                return
            if name is not None:
                if name in self.names:
                    reply(_error("exists", f"an object named {name!r} already exists on this server"))
                    self._drop_body(body, buffers)
                    return
                self.names[name] = object_id
            self.actors[object_id] = actor
        self.workers.submit(lambda: self._construct(actor, cls_ref, body, buffers, reply))

    def _construct(self, actor: _Actor, cls_ref: str, body: Any, buffers: list, reply: Callable) -> None:
        try:
            payload = transport.decode(body, buffers)
            blob = payload.get("blob")
            if blob is not None and payload.get("py") not in (None, _PY):
                raise RuntimeError(
                    f"class {cls_ref} was sent by value from Python {payload.get('py')}, but this server "
                    f"runs Python {_PY}: cloudpickle needs the same version. Install the class on the "
                    "server (--agent-dir) or use the same Python."
                )
            cls = self.resolver.resolve(cls_ref, blob)
            if cls is None:
                self._drop_actor(actor, "its class could not be loaded")
                reply(_error("needclass", f"class {cls_ref} is not importable here; send it by value"))
                return
            _context.set_context(_context.new_chain(), None, None)
            try:
                actor.obj = cls(*payload.get("args", ()), **payload.get("kwargs", {}))
            finally:
                _context.set_context(None, None, None)
            attrs = payload.get("attrs")
            if isinstance(attrs, dict) and isinstance(attrs.get("agent_id"), str):
                actor.obj.agent_id = attrs["agent_id"]
        except BaseException as exc:  # noqa: BLE001 - report anything the constructor raises
            self._drop_actor(actor, f"its constructor raised {type(exc).__name__}")
            reply(_remote_error(exc) if not isinstance(exc, transport.CodecError) else _error("badrequest", str(exc)))
            return
        actor.cls_name = type(actor.obj).__name__
        reply(_ok({
            "methods": getattr(type(actor.obj), "_mesh_methods", {}),
            "cls": actor.cls_name,
            "max_message_size": self.max_message_size,
            "lease_ttl": self.lease_ttl,
            "pool": self.pool_url,
            "inst": self.instance,
            "max_len": getattr(self.pool, "max_len", None),
            "max_expire_time": getattr(self.pool, "max_expire_time", None),
        }))
        self._next(actor)

    def _drop_actor(self, actor: _Actor, why: str) -> None:
        with self._lock:
            self.actors.pop(actor.id, None)
            if actor.name is not None and self.names.get(actor.name) == actor.id:
                del self.names[actor.name]
        with actor.lock:
            actor.failed = why
            queued, actor.queue = list(actor.queue), deque()
        for call in queued:
            self._unrun(call, _error("notfound", f"object {actor.id} is gone: {why}"))

    def _op_delete(self, header: dict, body: Any, buffers: list, reply: Callable) -> None:
        with self._lock:
            actor = self.actors.pop(header["obj"], None)
        if actor is None:
            reply(_error("notfound", f"no object {header['obj']!r} on this server"))
            return
        self._drop_actor(actor, "deleted")
        reply(_ok(None))

    # --------------------------------------------------------------- calls
    def _op_call(self, header: dict, body: Any, buffers: list, reply: Callable) -> None:
        # the header was checked whole by check_header(): nothing below can fail half-way
        keep = bool(header.get("keep"))
        task = header.get("task")
        sess = header.get("sess") if keep else None
        call = _Call(reply, header["m"], body, buffers, header.get("chain"), task, keep, sess)
        actor = self.actors.get(header["obj"])
        if keep:
            with self._lock:
                self._pending.setdefault(task, [])  # keeps fetches that arrived first
                self._early.pop(task, None)
                self._seen[task] = None
                if len(self._seen) > _SEEN_MAX:
                    self._seen.popitem(last=False)
                if sess is not None:
                    self._held.setdefault(sess, set()).add(task)
        if actor is None:
            self._unrun(call, _error("notfound", f"no object {header['obj']!r} on this server (deleted, never created, or the server restarted)"))
            return
        with actor.lock:
            if actor.failed:
                run = False
                failed = actor.failed
            elif actor.running == 0 or (call.chain is not None and actor.blocked.get(call.chain)):
                actor.running += 1
                run = True
            else:
                actor.queue.append(call)
                return
        if not run:
            self._unrun(call, _error("notfound", f"object {actor.id} is gone: {failed}"))
        elif threading.get_ident() == self.io_ident:
            self._ready.append((actor, call))
            if len(self._ready) >= _READY_MAX:
                self.start_ready()
        else:
            self.workers.submit(lambda: self._run(actor, call))

    def _unrun(self, call: _Call, entry: Entry) -> None:
        """Answer a call that will never run. Its arguments are still decoded (on a worker) and
        dropped, so that futures inside them tell their producers they are gone."""
        self._complete(call, entry)
        self._drop_body(call.body, call.buffers)

    def _drop_body(self, body: Any, buffers: list) -> None:
        def drop() -> None:
            try:
                transport.decode(body, buffers)
            except Exception:
                pass

        try:
            self.workers.submit(drop)
        except RuntimeError:  # shutting down: those results expire at their producers instead
            pass

    def start_ready(self) -> None:
        """Hand the actors made runnable by the last burst to workers (I/O thread)."""
        ready, self._ready = self._ready, []
        for actor, call in ready:
            try:
                self.workers.submit(lambda actor=actor, call=call: self._run(actor, call))
            except RuntimeError:  # the pool closed: the server is shutting down
                self._unrun(call, _shut_down())

    def _run(self, actor: _Actor, call: _Call) -> None:
        # Run the call, then keep draining this actor's mailbox on the same thread
        # (a thread switch per call would halve one actor's throughput); after a
        # batch, go to the back of the pool's queue so other actors get their turn.
        next_call: _Call | None = call
        for _ in range(_BATCH):
            self._run_one(actor, next_call)  # type: ignore[arg-type]
            next_call = self._take_next(actor)
            if next_call is None:
                return
        self.workers.submit(lambda: self._run(actor, next_call))

    def _run_one(self, actor: _Actor, call: _Call) -> None:
        chain = call.chain

        def on_block() -> None:
            ready = []
            with actor.lock:
                actor.blocked[chain] = actor.blocked.get(chain, 0) + 1
                if chain is not None:
                    keep = deque()
                    for c in actor.queue:
                        (ready if c.chain == chain else keep).append(c)
                    actor.queue = keep
                    actor.running += len(ready)
            for c in ready:
                self.workers.submit(lambda c=c: self._run(actor, c))
            self.workers.block()

        def on_unblock() -> None:
            self.workers.unblock()
            with actor.lock:
                n = actor.blocked.get(chain, 1) - 1
                if n:
                    actor.blocked[chain] = n
                else:
                    actor.blocked.pop(chain, None)

        if not self.accepting:
            self._unrun(call, _shut_down())
            return
        _context.set_context(chain, on_block, on_unblock)
        try:
            args, kwargs = transport.decode(call.body, call.buffers)
            if call.method.startswith("_") and call.method != "__call__":
                raise AttributeError(f"{call.method!r} is private: private methods are never called remotely")
            value = getattr(actor.obj, call.method)(*args, **kwargs)
            entry = _ok(value)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            entry = _call_error(exc)
        finally:
            _context.set_context(None, None, None)
        actor.served += 1
        self._complete(call, entry)

    def _take_next(self, actor: _Actor) -> _Call | None:
        """The call that just ended frees the actor: the next call of its mailbox, now running."""
        with actor.lock:
            actor.running -= 1
            if actor.running or not actor.queue:
                return None
            actor.running = 1
            return actor.queue.popleft()

    def _next(self, actor: _Actor) -> None:
        """Start the next call of the actor's mailbox on a worker, if any."""
        call = self._take_next(actor)
        if call is not None:
            self.workers.submit(lambda: self._run(actor, call))

    def _complete(self, call: _Call, entry: Entry) -> None:
        if not call.keep:
            call.reply(entry)
            return
        task = call.task
        with self._lock:
            discard = task in self._discard
            held_by = self._held.get(call.sess) if call.sess is not None else None
            held = held_by is not None and task in held_by
            if discard and held:
                held_by.discard(task)
        stored = False
        if not discard:
            try:
                # memory only (a Redis copy is written later, by another thread): never blocks
                self.pool.put(task, entry, held=held)
                stored = True
            except Exception as exc:  # noqa: BLE001 - the caller still gets the value, whole
                log.warning("could not store result %s: %s", task, exc)
        with self._lock:  # after the put: a `result` request never finds neither
            waiters = self._pending.pop(task, ())
            released_meanwhile = task in self._discard
            self._discard.discard(task)
            if released_meanwhile and held_by is not None:
                held_by.discard(task)
        if released_meanwhile and not discard:
            self.pool.release(task)
        for waiter in waiters:
            waiter(entry)
        size = len(entry[1]) + sum(len(b) for b in entry[2])
        if entry[0]["op"] == "ok" and size > PUSH_LIMIT and stored:
            call.reply(({"op": "ok", "big": 1}, _NIL, []))  # the caller fetches it if it reads it
        else:
            # a value pushed with the reply is the caller's to read whenever it likes: while the
            # caller holds its future, the result is held here too (never dropped by max_len)
            call.reply(entry)

    def _op_getattr(self, header: dict, body: Any, buffers: list, reply: Callable) -> None:
        name = header["m"]
        if not isinstance(name, str) or name.startswith("_"):
            reply(_error("remote", f"{name!r} is private: private attributes are never read remotely", "AttributeError"))
            return
        actor = self.actors.get(header["obj"])
        if actor is None or actor.obj is None:
            reply(_error("notfound", f"no object {header['obj']!r} on this server"))
            return

        def read() -> None:
            try:
                reply(_ok(getattr(actor.obj, name)))
            except BaseException as exc:  # noqa: BLE001
                reply(_remote_error(exc))

        self.workers.submit(read)

    # ------------------------------------------------------------- results
    def _op_result(self, header: dict, body: Any, buffers: list, reply: Callable) -> None:
        # a task of an earlier run of this server will never arrive: no grace for it
        this_run = header.get("inst") in (None, self.instance)
        self._when_done(header["task"], reply, this_run)

    def _when_done(self, task: str, fn: Callable[[Entry], None], wait_unseen: bool = True, stored_checked: bool = False) -> None:
        """Answer ``fn`` with the task's result: now from memory, when it ends if it runs, else "expired".

        Never blocks: a result this server does not have in memory is looked up in its Redis
        copy (if any) on the pool's executor.
        """
        entry = self.pool.get(task)
        if entry is None:
            with self._lock:
                waiters = self._pending.get(task)
                if waiters is not None:
                    waiters.append(fn)
                    return
                unseen = wait_unseen and task not in self._seen
            if unseen and self._stored is not None and not stored_checked:
                self._unseen_from_store(task, fn)  # e.g. made by an earlier run: no need to wait for it
                return
            with self._lock:
                if task in self._pending:
                    self._pending[task].append(fn)
                    return
                if unseen and task not in self._seen and len(self._early) < _EARLY_MAX:
                    # Not arrived yet: a consumer's fetch can overtake the call that makes the
                    # task (another socket, another route). Wait for it, a bounded time.
                    self._pending[task] = [fn]
                    self._early[task] = time.monotonic() + _EARLY_GRACE
                    return
            entry = self.pool.get(task)
            if entry is None:
                self._answer_stored(task, [fn])
                return
        fn(entry)

    def _unseen_from_store(self, task: str, fn: Callable[[Entry], None]) -> None:
        """A task this run has not seen: its Redis copy if there is one, else wait for it as usual."""

        def read() -> None:
            try:
                entry = self._stored(task)  # type: ignore[misc]
            except Exception:  # noqa: BLE001 - Redis down: wait for the task as without Redis
                entry = None
            if entry is not None:
                fn(entry)
            else:
                self._when_done(task, fn, True, stored_checked=True)

        try:
            self._pool_executor.submit(read)  # type: ignore[union-attr]
        except RuntimeError:  # shutting down
            fn(_shut_down())

    def _answer_stored(self, task: str, waiters: Any) -> None:
        """Answer with the Redis copy of ``task`` (off the I/O thread), or "expired" without one."""
        if self._stored is None:
            for waiter in waiters:
                waiter(_expired(task))
            return

        def read() -> None:
            try:
                entry = self._stored(task) or _expired(task)
            except Exception as exc:  # noqa: BLE001 - e.g. Redis down: answer anyway, never leave a fetch waiting
                entry = _error("unavailable", f"this server no longer holds result {task} in memory, and its result pool: {exc}")
            for waiter in waiters:
                waiter(entry)

        try:
            self._pool_executor.submit(read)  # type: ignore[union-attr]
        except RuntimeError:  # shutting down
            for waiter in waiters:
                waiter(_shut_down())

    def expire_early(self) -> None:
        """Answer fetches whose task never arrived within the grace period (a timer, I/O thread)."""
        if not self._early:
            return
        now = time.monotonic()
        late = []
        with self._lock:
            for task, deadline in list(self._early.items()):
                if deadline <= now:
                    del self._early[task]
                    self._discard.discard(task)  # released while we waited: nothing left to drop
                    late.append((task, self._pending.pop(task, ())))
        for task, waiters in late:
            try:
                entry = self.pool.get(task)
            except Exception as exc:  # noqa: BLE001 - answer anyway, never leave a fetch waiting
                entry = _error("unavailable", f"result pool: {exc}")
            if entry is None:
                self._answer_stored(task, waiters)
            else:
                for waiter in waiters:
                    waiter(entry)

    def local_result(self, task: str, inst: str | None = None) -> transport.ReplyFuture:
        """Fetch a result of this server from inside its own process (no network)."""
        fut = transport.ReplyFuture()
        try:
            self._when_done(task, lambda e: fut.set_result((dict(e[0]), e[1], e[2])), inst in (None, self.instance))
        except Exception as exc:  # noqa: BLE001
            fut.set_result(_error("unavailable", f"result pool: {exc}"))
        return fut

    def _op_release(self, header: dict, body: Any, buffers: list, reply: Callable) -> None:
        sess = header.get("sess")
        for item in header["tasks"]:  # checked by check_header()
            if type(item) is str:  # the owner's handle, never shared
                self._release(item, sess)
            else:  # [task, ref, children]: one holder gone
                done, owner = self._holder_gone(item[0], item[1], item[2], sess)
                if done:
                    self._release(item[0], owner)

    def _release(self, task: str, owner: str | None = None) -> None:
        """Nobody holds ``task`` any more: drop its result (when it ends, if it still runs)."""
        with self._lock:
            if owner is not None:
                held = self._held.get(owner)
                if held is not None:
                    held.discard(task)
            if task in self._pending:  # still running: drop the result when it ends
                self._discard.add(task)
                return
        self.pool.release(task)

    def _holder_gone(self, task: str, ref: str, children: list, sess: str | None = None) -> tuple[bool, str | None]:
        """Note that holder ``ref`` of ``task`` is gone, naming the borrowers it made.

        Returns:
            ``(True, owner's session)`` when no holder is left, else ``(False, None)``.
        """
        with self._lock:
            refs = self._refs.get(task)
            if refs is None:
                refs = self._refs[task] = [{""}, set(), None]  # the owner ("") always holds it at first
                if len(self._refs) > _REFS_MAX:
                    old, (_, _, old_owner) = self._refs.popitem(last=False)
                    # forgotten: that result is loose from now on (max_len / max_expire_time)
                    self._forget_holders(old, old_owner)
            live, gone_early = refs[0], refs[1]
            if ref == "":
                refs[2] = sess  # the owner's own report: its session
            if ref in live:
                live.discard(ref)
            else:
                gone_early.add(ref)  # a borrower whose maker has not reported it yet
            for child in children:
                if child in gone_early:
                    gone_early.discard(child)
                else:
                    live.add(child)
            if live:
                return False, None
            del self._refs[task]
            return True, refs[2]

    def _forget_holders(self, task: str, owner: str | None) -> None:
        # caller holds the lock
        if owner is not None:
            held = self._held.get(owner)
            if held is not None:
                held.discard(task)
        if task not in self._pending:
            self.pool.loosen(task)

    # ------------------------------------------------------------ sessions
    def _op_lease(self, header: dict, body: Any, buffers: list, reply: Callable) -> None:
        pass  # handle() already noted the session as alive

    def _op_bye(self, header: dict, body: Any, buffers: list, reply: Callable) -> None:
        sess = header.get("sess")
        if sess is not None:
            self.sessions.pop(sess, None)
            self._end_session(sess, "its creator exited")

    def sweep(self) -> None:
        """Drop the objects of clients not heard from for ``lease_ttl`` seconds (I/O thread timer)."""
        cutoff = time.monotonic() - self.lease_ttl
        for sess, seen in list(self.sessions.items()):
            if seen < cutoff:
                del self.sessions[sess]
                self._end_session(sess, f"its creator was not heard from for {self.lease_ttl:g} s")
        self._prune_refs()

    def _prune_refs(self, most: int = 10_000) -> None:
        """Forget holder counts of results the pool no longer has (expired, evicted); oldest first."""
        if not self._refs:
            return
        with self._lock:
            tasks = list(itertools.islice(self._refs, most))
        gone = [t for t in tasks if t not in self._pending and self.pool.get(t) is None]
        with self._lock:
            for task in gone:
                self._refs.pop(task, None)

    def _end_session(self, sess: str, why: str) -> None:
        for actor in [a for a in list(self.actors.values()) if a.session == sess]:
            self._drop_actor(actor, why)
        # Its caller is gone: its results go with it, unless a copy of the future it passed on
        # still holds them (then they are loose: bounded by max_len / max_expire_time from now).
        with self._lock:
            tasks = self._held.pop(sess, ())
        for task in tasks:
            with self._lock:
                refs = self._refs.get(task)
                if refs is not None:
                    refs[0].discard("")  # the owner is gone now (nothing happens if it said so already)
                    if refs[0]:
                        if task not in self._pending:  # a running one is stored loose when it ends
                            self.pool.loosen(task)
                        continue
                    del self._refs[task]
            self._release(task)

    def _op_lookup(self, header: dict, body: Any, buffers: list, reply: Callable) -> None:
        name = header["name"]
        object_id = self.names.get(name) if isinstance(name, str) else None
        actor = self.actors.get(object_id) if object_id else None
        if actor is None or actor.obj is None:
            reply(_error("notfound", f"no object named {name!r} on this server"))
            return
        reply(_ok({
            "obj": actor.id, "cls": actor.cls_name, "methods": getattr(type(actor.obj), "_mesh_methods", {}),
            "pool": self.pool_url, "inst": self.instance,
        }))

    # -------------------------------------------------------------- admin
    def _op_ping(self, header: dict, body: Any, buffers: list, reply: Callable) -> None:
        reply(_ok(self.info()))

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "capacity": self.capacity,
            "load": self.workers.load,
            "agents": len(self.actors),
            "py": f"{os.sys.version_info[0]}.{os.sys.version_info[1]}",
            "proto": transport.PROTOCOL_MAJOR,
            "uptime": time.time() - self.started,
            "max_message_size": self.max_message_size,
            "pid": os.getpid(),
        }

    def _op_status(self, header: dict, body: Any, buffers: list, reply: Callable) -> None:
        agents = []
        for a in list(self.actors.values()):
            agents.append({
                "id": a.id,
                "registered_name": a.name,
                "detached": a.session is None,
                "class": a.cls_name,
                "name": _plain_name(getattr(a.obj, "name", None) if a.obj is not None else None),
                "queue": len(a.queue),
                "served": a.served,
            })
        reply(_ok({
            **self.info(), "agents": agents, "results": len(self.pool), "results_bytes": getattr(self.pool, "nbytes", None),
            "rss": _rss(),
        }))

    def _op_stop(self, header: dict, body: Any, buffers: list, reply: Callable) -> None:
        reply(_ok(None))
        threading.Thread(target=self.on_stop, name="mesh-stop", daemon=True).start()

    # ------------------------------------------------------------ shutdown
    def close(self, grace: float = 5.0) -> bool:
        """Stop accepting; fail queued calls; let running ones finish within ``grace``.

        Returns:
            True if calls were running or queued: their replies have just been sent.
        """
        self.accepting = False
        busy = self.workers.running > 0 or self.workers.queued > 0
        queued: list[_Call] = []
        for actor in list(self.actors.values()):
            with actor.lock:
                queued.extend(actor.queue)
                actor.queue.clear()
                actor.failed = actor.failed or "server shut down"
        for call in queued:
            self._unrun(call, _shut_down())
        self.workers.wait_idle(grace)
        self.workers.close(0.5)
        if self._pool_executor is not None:
            self._pool_executor.shutdown(wait=False, cancel_futures=True)
        self.pool.close()
        return busy or bool(queued)


def _plain_name(name: Any) -> Any:
    """An agent's ``name`` as plain data: admin replies are decoded without pickles."""
    return name if name is None or type(name) in (str, int, float, bool) else repr(name)[:200]


def _rss() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
