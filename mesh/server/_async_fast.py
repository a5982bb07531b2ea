"""The async fast lane: a plain kept call (``.remote()``, ``@async_func``) served in one pass on the I/O thread.

The general handler (:meth:`~mesh.server._dispatch.Servicer.handle`: the header check, a
:class:`~mesh.server._mailbox.Call` and its reply closure, :meth:`Results.expect`, the cancel
registry, admission, :meth:`CallRunner._run_one`'s two closures, :meth:`CallRunner.complete`, a
reply dict merged and packed) costs 40–60 µs of server CPU per kept call on a loaded machine.
A request that is exactly a plain kept call (``op``, ``obj``, ``m``, ``id``, ``task``,
``keep: 1`` and optionally ``chain`` and ``sess``: no deadline, no stream, no trace context, no
buffers) of an idle, non-durable object whose method may run inline
(:class:`~mesh.server._inline.InlinePolicy`), on a server that does not trace and has no
cancel waiting for that task, is served by :class:`KeptLane` instead: admitted under the
actor's lock, run, its result stored (:meth:`Results.store_now`) and answered with the ``ok``
template (:meth:`transport.Router.reply_ok`, which batches the replies of a burst for a client
that sends batches). Anything else, or anything it is unsure of, goes to the general handler
untouched (nothing has changed at that point).

Semantics kept: one call at a time per object in arrival order (only an idle actor, nothing
queued before it; the mailbox's next call after it), re-entrancy (the chain and ``blocking()``
hooks), ``mesh.cancelled()`` and the cancel cascade (the call runs under its own cancel scope,
so the calls it makes are its children), the watchdog, the inline history, call stats, the
session touch, results held for the caller's session. While such a call runs on the I/O thread
no other request is read, so nobody can fetch, release or cancel its task: it is registered in
the results store and the cancel registry only if the I/O loop is handed to another thread
while it runs (it waits on another task, or the watchdog finds it stalled; :meth:`_KeptHooks.register`),
and it then ends through the general completion (:meth:`CallRunner.complete`) as any call does.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any


from mesh._core import context, tracing, wire
from mesh._core.methods import runs_on_loop
from mesh.server._calls import PUSH_LIMIT, call_error, ok, result_of
from mesh.server._cancel import RUNNING, TaskScope
from mesh.server._checks import ID_MAX, NAME_MAX
from mesh.server._coro_fast import CoroLane
from mesh.server._lane_parts import _Hooks, call_args, packed_plain, replier
from mesh.server._mailbox import Call
from mesh.server._results import shut_down

__all__ = ["KeptLane"]

_get_ident = threading.get_ident
_modules = sys.modules
_monotonic = time.monotonic
_local = context._local
_OK = {"op": wire.OK}  # read only
_OUTLIER_RUNS = 8  # a run over the inline threshold counts if another one was within this many runs
_ROWS_MAX = 4096  # stats rows kept by KeptLane (past it: looked up again)


class _KeptHooks(_Hooks):
    """The ``blocking()`` hooks of a kept call on the I/O thread, and what it needs if it is handed off."""

    __slots__ = ("lane", "scope", "call", "task", "sess", "method", "router", "identity", "rid", "t0")

    def __init__(self, lane: KeptLane) -> None:
        super().__init__(lane.calls)
        self.lane = lane
        self.scope: Any = None
        self.call: Any = None  # the registered Call, once the call was handed off (register)
        self.task = self.sess = self.method = self.router = self.identity = None
        self.rid = 0
        self.t0 = 0.0

    def register(self) -> None:
        """The I/O loop is about to go to another thread while this call runs: register it as the
        general path would have at arrival (results store, cancel registry), so that a fetch,
        a release or a cancel read by the new I/O thread finds it (:meth:`CallRunner._hand_off`,
        from this call's thread when it waits, or from the watchdog's under its lock)."""
        if self.call is not None:
            return
        calls = self.calls
        call = Call(
            replier(self.router, self.identity, self.rid), self.method, b"", [], self.chain, self.task, True, self.sess
        )
        call.t0 = self.t0
        scope = self.scope
        call.scope = scope
        scope.call = call
        calls.results.expect(self.task, self.sess)
        cancels = calls.cancels
        with cancels._lock:
            cancels._scopes[self.task] = scope
        self.call = call


class KeptLane:
    """Serves plain kept calls for :class:`~mesh.server._inline_fast.FastLane` (I/O thread)."""

    __slots__ = (
        "servicer",
        "slow",
        "calls",
        "actors",
        "seen",
        "hooks",
        "running",
        "outlier",
        "outlier_at",
        "coro",
        "rows",
    )

    def __init__(self, servicer: Any) -> None:
        self.servicer = servicer
        self.slow = servicer.handle
        self.calls = servicer.calls
        self.actors = servicer.objects.actors
        self.seen = servicer.sessions.seen  # Sessions.touch, inlined
        self.hooks = _KeptHooks(self)
        self.running: Any = None  # the hooks of the kept call whose method runs on the I/O thread now
        self.outlier: Any = None  # the history of the last run over the threshold that was not believed
        self.outlier_at = 0  # its run count then
        self.calls.on_hand_off = self._on_hand_off
        self.coro = CoroLane(servicer)  # plain kept calls of async def methods (mesh.server._coro_fast)
        self.rows: dict[tuple[str, str], Any] = {}  # (class, method) -> its CallStats row (a row is never dropped)

    def _on_hand_off(self, ident: int) -> None:
        """The watchdog hands the I/O loop of thread ``ident`` off (under its lock)."""
        hooks = self.running
        if hooks is not None and hooks.ident == ident:
            hooks.register()

    def handle(self, router: Any, identity: bytes, header: dict, body: Any) -> bool | None:
        """Serve a kept call here if it is plain (else the general handler). Never raises."""
        get = header.get
        obj_id, method, rid, chain, sess, task = get("obj"), get("m"), get("id"), get("chain"), get("sess"), get("task")
        keep = get("keep")
        if (
            (keep is not True and (type(keep) is not int or keep != 1))
            or type(rid) is not int
            or type(task) is not str
            or len(task) > ID_MAX
            or len(header) != 6 + (chain is not None) + (sess is not None)
            or type(obj_id) is not str
            or len(obj_id) > ID_MAX
            or type(method) is not str
            or len(method) > NAME_MAX
            or (chain is not None and (type(chain) is not str or len(chain) > ID_MAX))
            or (sess is not None and (type(sess) is not str or len(sess) > ID_MAX))
            or "op" not in header
        ):  # (with obj, m, id, task, keep and the count: no other key)
            return self.slow(router, identity, header, body, [])
        actor = self.actors.get(obj_id)
        if actor is not None and self.coro.takes(actor, method, body):
            return self.coro.handle(router, identity, actor, method, chain, task, sess, body, rid, self.slow, header)
        calls = self.calls
        streams = calls.streams.states
        if (
            actor is None
            or actor.durable is not None
            or not self.servicer.accepting
            or calls.node is None
            or calls.cancels._tombs
            or (streams and task in streams)
            or not calls.inline.allows_entry(hist := calls.inline.history(type(actor.obj), method))
            or (_modules.get("opentelemetry.trace") is not None and tracing.enabled())
        ):
            return self.slow(router, identity, header, body, [])
        if not actor.enter_idle():  # admission as Actor.admit, for an idle actor only (nothing queued before it)
            return self.slow(router, identity, header, body, [])
        t0 = _monotonic()
        if sess is not None:
            self.seen[sess] = t0
        self._run(actor, method, chain, task, sess, body, router, identity, rid, t0, hist)
        return None  # (not True: the burst goes on, the next call of a batch is read at once)

    def _row(self, cls_name: str, method: str) -> Any:
        rows = self.rows
        if len(rows) >= _ROWS_MAX:
            rows.clear()
        row = rows[(cls_name, method)] = self.calls.stats.row(cls_name, method)
        return row

    def _timed(self, hist: list, elapsed: float) -> None:
        """Record a run in the inline history, except a lone run over the threshold: it counts only
        when another run of that method was over it too within the last :data:`_OUTLIER_RUNS`
        runs. On a loaded machine the I/O thread is preempted, waits for the GIL or collects
        garbage in the middle of a 1 µs method now and then; one such run (its average then over
        the threshold) sent a pipelined actor off the lane, and its queue kept the rest of the
        burst on the general path (15% of a 10,000-call burst's calls, measured at load 10–26). A
        method that is really slow runs inline at most twice more than before; a run that stalled
        (the watchdog handed the loop off, past :data:`~mesh.server._inline.STALL`) counts at once
        (not through here)."""
        inline = self.calls.inline
        if elapsed > inline.threshold:
            runs = hist[0]
            if self.outlier is not hist or runs - self.outlier_at > _OUTLIER_RUNS:
                self.outlier, self.outlier_at = hist, runs
                hist[0] = runs + 1
                return
        inline.add(hist, elapsed)

    def _run(
        self,
        actor: Any,
        method: str,
        chain: Any,
        task: str,
        sess: Any,
        body: Any,
        router: Any,
        identity: bytes,
        rid: int,
        t0: float,
        hist: list,
    ) -> None:
        calls = self.calls
        hooks = self.hooks
        if hooks.busy:  # the previous kept call still runs on a thread that handed the loop off
            hooks = self.hooks = _KeptHooks(self)
        hooks.busy = True
        hooks.actor, hooks.chain, hooks.ident, hooks.waited = actor, chain, _get_ident(), False
        hooks.task, hooks.sess, hooks.method, hooks.router, hooks.identity, hooks.rid, hooks.t0 = (
            task,
            sess,
            method,
            router,
            identity,
            rid,
            t0,
        )
        hooks.call = None
        # its own scope, running: mesh.cancelled() and the calls it makes (its children) see it
        scope = hooks.scope = TaskScope(calls.cancels, task, None, None, actor, sess)
        scope.state = RUNNING
        obj = actor.obj
        cls = type(obj)
        local = _local  # context.set_context, inlined
        local.chain, local.on_block, local.on_unblock, local.scope = chain, hooks.on_block, hooks.on_unblock, scope
        packed = None  # the body of a plain ok reply (a str, number, bool or None: packed here)
        entry: Any = None
        elapsed = 0.0
        try:
            args, kwargs = call_args(body)
            if method.startswith("_") and method != "__call__":
                raise AttributeError(f"{method!r} is private: private methods are never called remotely")
            fn = getattr(obj, method)
            if runs_on_loop(cls, method, fn):  # shadowed by a coroutine function: the event loop runs it
                hooks.register()
                if calls._to_loop(actor, hooks.call, fn, args, kwargs):
                    entry = False  # its task answers, and starts the actor's next call
                else:
                    entry = shut_down()
            else:
                watchdog = calls.watchdog
                self.running = hooks
                watchdog.begin(hooks.ident)  # it covers the method only: this thread sends the reply after it
                try:
                    t = _monotonic()  # after begin(), which may start the watchdog's thread: not the method's time
                    value = fn(*args, **kwargs)
                    elapsed = _monotonic() - t
                finally:
                    watchdog.end(hooks.ident)
                    if self.running is hooks:
                        self.running = None
                packed = packed_plain(value, hooks.pack)  # (the hooks' packer: no thread-local look-up)
                if packed is not None and len(packed) > PUSH_LIMIT:
                    packed = None
                if packed is None:
                    entry = ok(result_of(cls, method, value))
                if hooks.waited:
                    calls.inline.waited(cls, method)
                elif hooks.call is not None or elapsed <= calls.inline.threshold:  # (stalled: believed)
                    calls.inline.add(hist, elapsed)
                else:
                    self._timed(hist, elapsed)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            entry = call_error(exc)
            packed = None
            if hooks.waited:
                calls.inline.waited(cls, method)
        finally:
            local.chain = local.on_block = local.on_unblock = local.scope = None
            hooks.busy = False
        if entry is False:
            return
        actor.served += 1
        call = hooks.call
        if call is None and packed is not None:  # the lane's own ending: nobody else saw this call
            calls.results.store_now(task, sess, (_OK, packed, []))
            router.reply_ok(identity, rid, packed)
            row = self.rows.get((actor.cls_name, method))  # (CallStats.record of an ok, its row kept)
            if row is None:
                row = self._row(actor.cls_name, method)
            row.ok(t0)
            if not actor.leave_idle():  # (else the actor is idle again: no take_next)
                calls.next(actor)
            return
        if packed is not None:
            entry = (_OK, packed, [])
        calls.stats.record(actor.cls_name, method, t0, entry[0])
        if call is None:  # an error, or a value for the codec: answered as the general path answers
            call = Call(replier(router, identity, rid), method, b"", [], chain, task, True, sess)
            call.t0 = t0
            calls.results.expect(task, sess)
        calls.complete(call, entry)  # (registered: its scope says whether a cancel answered it already)
        calls.next(actor)
