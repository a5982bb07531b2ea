"""Coroutine calls straight to the server's event loop, without a worker in between.

The worker path (:meth:`mesh.server._calls.CallRunner._run_one`) decodes a call's arguments on
a worker, then hands the coroutine to the loop: three thread hops per call (I/O thread ->
worker -> loop -> I/O thread). A coroutine call whose arguments are small (at most
:data:`SMALL` bytes, no out-of-band buffers) skips the worker: the I/O thread (or the loop, when
it starts an actor's next call) hands it to the loop at once, and its task decodes the
arguments there, in the call's context. Large arguments still go through a worker: unpickling
them may take long and must not hold the loop.

Whether a method runs on the loop is read from the object's class (``mesh._core.methods.getattr_static``, as ``inspect``'s:
no user code runs on the I/O thread), once per class and name; an instance attribute of that
name, or anything unusual, takes the worker path, which decides with the real ``getattr``.
Actor semantics are unchanged: the call was admitted by the mailbox as before, and its task
starts the actor's next call when it ends (:meth:`CallRunner.next`).
"""

from __future__ import annotations

import weakref
from typing import Any

import transport
from mesh._core import tracing
from mesh._core.methods import getattr_static, runs_on_loop
from mesh.server._aio import Job
from mesh.server._hosting import before_blocking
from mesh.server._mailbox import Actor, Call
from mesh.server._results import shut_down

__all__ = ["SMALL", "loop_job", "start"]

SMALL = 4096  # bytes: arguments up to this size are decoded on the loop

# class -> {method name: runs on the loop}; weak: classes sent by value may come and go
_kinds: weakref.WeakKeyDictionary[type, dict[str, bool]] = weakref.WeakKeyDictionary()
_last: list = [(weakref.ref(set()), {})]  # (the last class asked about, held weakly: a dead reference first; its table)


def _on_loop(obj: Any, name: str) -> bool:
    """True if method ``name`` of ``obj`` is a coroutine (or async generator) function of its class."""
    cls = type(obj)
    last = _last[0]
    if last[0]() is cls:  # the class asked about last (one tuple: threads replace it whole)
        table = last[1]
    else:
        try:
            table = _kinds.get(cls)
            if table is None:
                table = _kinds[cls] = {}
            _last[0] = (weakref.ref(cls), table)
        except TypeError:  # not weak-referenceable: no cache
            table = {}
    kind = table.get(name)
    if kind is None:
        try:
            raw = getattr_static(cls, name)
        except AttributeError:
            raw = None
        fn = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
        kind = table[name] = fn is not None and runs_on_loop(cls, name, fn)
    if kind and name in getattr(obj, "__dict__", ()):  # shadowed on the instance: the worker decides
        return False
    return kind


class _ActorJob(Job):
    """The loop job of a coroutine call of an actor. Its blocking hooks are its methods (a bound
    method made when a step reads them), not two closures and their cells kept for the call's
    life: 100,000 sleeping calls hold 500,000 fewer objects for the collector to walk."""

    __slots__ = ("runner", "actor")

    def __init__(self, label: str, chain: Any, runner: Any, actor: Actor, scope: Any) -> None:
        self.label = label
        self.chain = chain
        self.runner = runner
        self.actor = actor
        self.task = None
        self.reported = False
        self.scope = scope

    def on_block(self) -> None:  # type: ignore[override]  # a step (or a thread it started) waits on another mesh task
        runner, actor = self.runner, self.actor
        before_blocking(runner)  # a step blocking the thread that runs the I/O loop: hand that off first
        for c in actor.block(self.chain):
            runner._submit(actor, c)

    def on_unblock(self) -> None:  # type: ignore[override]
        self.actor.unblock(self.chain)


def loop_job(runner: Any, actor: Actor, call: Call) -> Job:
    """The loop job of a coroutine call: its label and blocking hooks (a wait lets its chain re-enter)."""
    return _ActorJob(f"{type(actor.obj).__name__}.{call.method}", call.chain, runner, actor, call.scope)


def start(runner: Any, actor: Actor, call: Call) -> bool:
    """Start an admitted call on the loop if it is a small coroutine call (True); else leave it (False).

    Any thread; never runs user code here.
    """
    obj = actor.obj
    if obj is None or call.buffers or (call.method[:1] == "_" and call.method != "__call__"):
        return False
    body = call.body
    if (len(body) if type(body) is bytes else memoryview(body).nbytes) > SMALL or not _on_loop(obj, call.method):
        return False
    job = loop_job(runner, actor, call)
    return runner.aio.submit(job, lambda: _begin(runner, actor, call, job))


async def _begin(runner: Any, actor: Actor, call: Call, job: Job) -> None:
    """The task of a call started by :func:`start` (loop thread): the worker path's checks, decode, run."""
    try:
        fn = getattr(actor.obj, call.method)
    except BaseException as exc:  # noqa: BLE001 - reported to the caller, by _main
        fn = None
        failed: BaseException | None = exc
    else:
        failed = None
        if not runs_on_loop(type(actor.obj), call.method, fn):  # a descriptor made it something else
            runner._submit(actor, call)  # the worker path, as if this module did not exist
            return
    scope = call.scope
    if not runner._accepting() or (scope is not None and not runner.cancels.starting(scope)):
        runner.unrun(call, shut_down())  # (a cancelled one was answered already: this drops the arguments)
        runner.next(actor)
        return
    if scope is not None:
        scope.job = job
    if tracing.enabled():
        call.trace = tracing.server_span(call.trace, type(actor.obj).__name__, call.method)
    args: Any = ()
    kwargs: Any = {}
    if failed is None:
        try:
            args, kwargs = transport.decode(call.body, call.buffers)  # in the call's context (the step's)
        except BaseException as exc:  # noqa: BLE001
            failed = exc
    if failed is not None:
        fn, args, kwargs = _raise, (failed,), {}
    elif call.trace is not None and type(call.trace) is tracing.ServerSpan:
        fn = call.trace.bind(fn, True)
    await runner._main(actor, call, job, fn, args, kwargs)  # invoke, await, answer, start the next call


def _raise(exc: BaseException) -> Any:
    raise exc
