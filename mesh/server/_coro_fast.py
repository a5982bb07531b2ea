"""The coroutine lane: a plain kept call of an ``async def`` method started in one pass on the hosting thread.

The general way of a kept coroutine call (:meth:`~mesh.server._dispatch.Servicer.handle`: the
header checked again, a reply closure, :meth:`Cancels.arrive`, the mailbox's admission,
:func:`mesh.server._loop_calls.start` and its :class:`~mesh.server._aio.Job` closures, then three
coroutine frames on the loop (``Aio._body`` -> ``_begin`` -> ``CallRunner._main``) and a reply
dict merged and packed) is most of what an awaited no-op ``async def`` costs the server beyond
a sync call. A request the async fast lane (:class:`~mesh.server._async_fast.KeptLane`) has
found to be exactly a plain kept call, of an idle non-durable object whose method is a coroutine
function of its class, on a server whose event loop is hosted by the I/O thread, is started by
:class:`CoroLane` instead (on the hosting thread; on a thread that took the I/O loop over while a
step held it, the task is made on the loop's thread by :meth:`Aio.submit`): admitted under the actor's lock,
registered (results store, cancel registry) as the general path registers it, and run by one
coroutine (:func:`_run`) as one task, whose steps go through :class:`~mesh.server._aio._Stepped`
as every coroutine call's do. A plain ``ok`` answer goes out by the ``ok`` template
(:meth:`transport.Router.reply_ok`: staged and batched with the others of the same turn for a
client that sends batches, e.g. a burst of sleeping coroutines whose timers fire together).

Semantics kept (the same code as the general path where it matters): one call at a time per
object in arrival order (idle actor only; :meth:`CallRunner.next` after it), cancellation
(``CancelledError`` at the next await, through the job the scope holds), ``mesh.cancelled()``,
re-entrancy (the job's blocking hooks, :func:`~mesh.server._loop_calls.loop_job`), the
stall log naming object and method, errors by :func:`~mesh.server._calls.call_error`, results
held for the caller's session. Anything else goes the general way untouched.

The task's first step runs right in the handler that read the call, by the task itself (its
scheduling caught, as Python 3.12's ``eager_start``): a coroutine that never suspends is answered
within that turn, with no asyncio iteration (NOTES-aiolat2.md). ``MESH_CORO_EAGER=0`` queues the
first step on the loop as any task's instead (it runs after the turn). It
is never run with no task at all: in Python 3.11 the step would see no current task, and
``asyncio.timeout()``, ``asyncio.current_task()`` and anyio's cancel scopes (httpx) need one.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import types
from typing import Any


from mesh._core import tracing, wire
from mesh._core.methods import runs_on_loop
import mesh.server._aio as _aio
from mesh.server._aio import Job, _Stepped
from mesh.server._calls import PUSH_LIMIT, call_error, checked_value, ok
from mesh.server._cancel import TaskScope
from mesh.server._loop_calls import SMALL, _on_loop, loop_job
from mesh.server._lane_parts import call_args
from mesh.server._mailbox import Call
from mesh.server._results import shut_down

__all__ = ["CoroLane"]

_get_ident = threading.get_ident
_modules = sys.modules
_tasks: list = [False]  # asyncio's table of current tasks (False: not looked up yet; None: none)
_monotonic = time.monotonic
_Coroutine = types.CoroutineType
_OK = wire.OK
# "0": the task's first step is queued on the loop instead of run in the handler that read the call
# (eager, the default since NOTES-aiolat2.md: a call that never suspends is answered in the turn
# that read it, with no asyncio iteration, and the reader reads the caller's next call in the same
# drain; ~15 Python calls and ~10-20 us of server CPU fewer per call)
EAGER = os.environ.get("MESH_CORO_EAGER", "1") != "0"


class CoroLane:
    """Starts plain kept coroutine calls for :class:`~mesh.server._async_fast.KeptLane` (I/O thread)."""

    __slots__ = ("servicer", "calls", "seen")

    def __init__(self, servicer: Any) -> None:
        self.servicer = servicer
        self.calls = servicer.calls
        self.seen = servicer.sessions.seen

    def takes(self, actor: Any, method: str, body: Any) -> bool:
        """Whether this lane may start the call (no user code runs here)."""
        calls = self.calls
        aio = calls.aio
        h = aio._host
        if h is None or aio._closed:  # (any I/O thread: a handed-off one submits to the loop's thread)
            return False
        obj = actor.obj
        if (obj is None or actor.durable is not None or not self.servicer.accepting or calls.node is None
                or calls.cancels._tombs or (method[:1] == "_" and method != "__call__")):
            return False
        if (len(body) if type(body) is bytes else memoryview(body).nbytes) > SMALL:
            return False
        return _on_loop(obj, method) and not ("opentelemetry.trace" in _modules and tracing.enabled())

    def handle(self, router: Any, identity: bytes, actor: Any, method: str, chain: Any, task: str, sess: Any,
               body: Any, rid: int, slow: Any, header: dict) -> bool | None:
        """Start the call (after :meth:`takes`), or give it to ``slow`` if its actor is busy."""
        calls = self.calls
        streams = calls.streams.states
        if streams and task in streams:
            return slow(router, identity, header, body, [])
        with actor.lock:  # admission as Actor.admit, for an idle actor only (nothing queued before it)
            if actor.running or actor.failed:
                idle = False
            else:
                actor.running = idle = 1
        if not idle:
            return slow(router, identity, header, body, [])
        t0 = _monotonic()
        if sess is not None:
            self.seen[sess] = t0
        # registered as the general path registers it: a fetch, a release or a cancel read later in
        # this turn (or while the call sleeps) finds it
        call = Call(_Reply(router, identity, rid), method, body, [], chain, task, True, sess)
        call.t0 = t0
        calls.results.expect(task, sess)
        cancels = calls.cancels
        scope = call.scope = TaskScope(cancels, task, None, call, actor, sess)
        cancels._scopes[task] = scope
        job = loop_job(calls, actor, call)
        job.scope = scope
        scope.job = job
        aio = calls.aio
        host = aio._host
        if _get_ident() != host.ident:  # the I/O loop was handed off: its task is made on the loop's thread
            if not aio.submit(job, lambda: _run(calls, actor, call, job, router, identity, rid)):
                calls.unrun(call, shut_down())
                calls.next(actor)
            return None
        with aio._lock:
            closed = aio._closed
            if not closed:
                aio._jobs.add(job)
        if closed:
            calls.unrun(call, shut_down())
            calls.next(actor)
            return None
        loop = host.loop
        coro = _Stepped(aio, job, _run(calls, actor, call, job, router, identity, rid))
        asyncio = _aio.asyncio
        table = _tasks[0]
        if table is False:
            table = _tasks[0] = _current_of(asyncio)
        current = table.get(loop) if table is not None else asyncio.current_task(loop)  # (no Python call)
        if not EAGER or current is not None:
            job.task = asyncio.Task(coro, loop=loop)
            return None
        # the task's first step right here, by the task itself (current_task() is it, asyncio.timeout
        # works): its scheduling is caught instead of queued (Python 3.12's eager_start, by hand)
        caught: list = []
        loop.call_soon = lambda cb, *args, context=None: caught.append((cb, args, context))
        try:
            job.task = asyncio.Task(coro, loop=loop)
        finally:
            del loop.call_soon
        step, args, ctx = caught[0]
        events = asyncio.events
        before = events._get_running_loop()
        events._set_running_loop(loop)  # (a turn's handlers run with no running loop: the step needs it)
        try:
            ctx.run(step, *args)
        finally:
            events._set_running_loop(before)
        return None


def _current_of(asyncio: Any) -> Any:
    """``asyncio.current_task``'s table (loop -> task) where the C module keeps one (3.8-3.13), else None."""
    table = getattr(asyncio.tasks, "_current_tasks", None)
    return table if isinstance(table, dict) else None


class _Reply:
    """A lane call's ``reply`` (as :func:`~mesh.server._lane_parts.replier`'s closure): one object
    held while the call sleeps, not a function and its three cells."""

    __slots__ = ("router", "identity", "rid")

    def __init__(self, router: Any, identity: bytes, rid: int) -> None:
        self.router = router
        self.identity = identity
        self.rid = rid

    def __call__(self, entry: Any) -> None:
        head = entry[0]
        if not entry[2] and len(head) == 1 and head.get("op") == _OK:
            self.router.reply_ok(self.identity, self.rid, entry[1])
        else:
            self.router.reply(self.identity, {**head, "re": self.rid}, entry[1], entry[2])


async def _run(runner: Any, actor: Any, call: Call, job: Job, router: Any, identity: bytes, rid: int) -> None:
    """The task of a call started by :class:`CoroLane` (hosting thread): the checks, decode, invoke,
    await, answer, start the actor's next call (``_begin`` and ``CallRunner._main`` in one frame).
    ``router``, ``identity``, ``rid``: where its reply goes (as ``call.reply`` sends it)."""
    aio = runner.aio
    try:
        try:
            fn = getattr(actor.obj, call.method)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller, below
            fn = None
            failed: BaseException | None = exc
        else:
            failed = None
            if not runs_on_loop(type(actor.obj), call.method, fn):  # a descriptor made it something else
                runner._submit(actor, call)  # the worker path, as if this lane did not exist
                return
        if not runner._accepting() or not runner.cancels.starting(call.scope):
            runner.unrun(call, shut_down())  # (a cancelled one was answered already: this drops the arguments)
            runner.next(actor)
            return
        value: Any = None
        try:
            if failed is not None:
                raise failed
            args, kwargs = call_args(call.body)  # in the call's context (the step's)
            value = fn(*args, **kwargs)  # type: ignore[misc]
            fn = args = kwargs = None  # not held by the frame while it sleeps (the collector walks fewer)
            if type(value) is _Coroutine:
                value = await value
            entry = ok(checked_value(job.label, value))
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            if aio.shutting_down(exc):
                entry = wire.err_entry(wire.K_UNAVAILABLE, f"server shut down while running this call ({job.label})")
            else:
                entry = call_error(exc)
        value = args = kwargs = failed = None  # noqa: F841 - not kept alive by the task while the reply goes
        actor.served += 1
        runner.stats.record(actor.cls_name, call.method, call.t0, entry[0])
        aio.unguard()  # hosted: the step can no longer be handed off, its reply goes straight out
        # runner.complete(call, entry), inline for a small plain ok (the lane's common case): the
        # cancel registry says whether it is still to answer, the store keeps it, the template replies
        entry = runner.cancels.ended(call.scope, entry)
        if entry is not None:
            head, body = entry[0], entry[1]
            if (len(head) == 1 and head.get("op") == _OK and not entry[2] and len(body) <= PUSH_LIMIT
                    and not runner.streams.states):
                runner.results.complete(call.task, call.sess, entry)
                router.reply_ok(identity, rid, body)
            else:
                runner.answer(call, entry)
        runner.next(actor)
    except BaseException:  # noqa: BLE001 - the call is answered above; this is a bug in the server
        import logging

        logging.getLogger("mesh.server").exception("coroutine call %s failed in the server", job.label)
    finally:
        aio._end(job)


