"""The server's event loop: coroutine methods (``async def``) run on it as tasks, not on workers.

One loop per server, on its own thread, started by the first coroutine call (a server that
never gets one never imports asyncio). Actor semantics are the mailbox's: a coroutine call
holds its object's mailbox until it ends, so the object's next call (sync or async) starts
only then; coroutines of different objects interleave on the loop, not bounded by
``capacity``.

Every step of a call's task (and of the tasks it creates) runs through :class:`_Stepped`,
which

* sets the call context (``mesh._core.context``: the call chain and the blocking hooks) for the
  step, so that a mesh call made from the coroutine carries its chain (re-entrancy A->B->A),
  and clears it after: many coroutines take turns on one thread, a thread-local context
  must follow the task, not the thread;
* times the step: a step that holds the loop longer than :data:`STALL_ENV` seconds (default
  0.2) is logged naming the object's class and method (a sync ``time.sleep`` in an
  ``async def``); a step still running after :data:`_STUCK` seconds is logged while it runs.

The loop's default executor (``asyncio.to_thread``, ``loop.run_in_executor(None, ...)``)
gives its threads the context of the step that submitted the work, so a sync mesh call made
there is on the caller's chain and marks it blocked (re-entrancy) as a worker would.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Coroutine
from typing import Any, Callable

from mesh._core import context

__all__ = ["HOSTED_ENV", "STALL_ENV", "Aio", "Job"]

log = logging.getLogger("mesh.server")

STALL_ENV = "MESH_LOOP_STALL"  # seconds a step may hold the server's loop before it is logged
HOSTED_ENV = "MESH_HOSTED_LOOP"  # "0": the loop gets a thread of its own (A/B measurements, a way out)
_STALL_DEFAULT = 0.2
_STUCK = 5.0  # a step running this long is reported while it still runs (it may never end)

asyncio: Any = None  # imported by the first loop started
_monotonic = time.monotonic
_local = context._local


def _stall_threshold() -> float:
    raw = os.environ.get(STALL_ENV)
    try:
        value = float(raw) if raw else _STALL_DEFAULT
    except ValueError:
        log.warning("%s=%r is not a number of seconds: using %s", STALL_ENV, raw, _STALL_DEFAULT)
        return _STALL_DEFAULT
    return value if value > 0 else _STALL_DEFAULT


class Job:
    """One coroutine call on the loop: its name for logs, and the call context of its steps."""

    __slots__ = ("label", "chain", "on_block", "on_unblock", "task", "reported", "scope")

    def __init__(self, label: str, chain: Any, on_block: Callable[[], None], on_unblock: Callable[[], None]) -> None:
        self.label = label
        self.chain = chain
        self.on_block = on_block
        self.on_unblock = on_unblock
        self.task: Any = None
        self.reported = False  # a stuck step of it was reported already
        self.scope: Any = None  # its call's cancel scope (mesh.server._cancel), if any


class _Stepped(Coroutine):
    """A coroutine whose every step runs in its job's context, timed."""

    __slots__ = ("_aio", "_job", "_coro")

    def __init__(self, aio: Aio, job: Job, coro: Any) -> None:
        self._aio = aio
        self._job = job
        self._coro = coro

    def send(self, value: Any) -> Any:
        # the step of _step, inlined for send (every step but a thrown-in exception's): no bound
        # method, the thread-local context written directly (context.set_context)
        aio, job = self._aio, self._job
        aio.current = job
        aio.since = t0 = _monotonic()
        local = _local
        local.chain, local.on_block, local.on_unblock, local.scope = job.chain, job.on_block, job.on_unblock, job.scope
        guard = aio.guard
        guarded = guard is not None and guard.begin()  # hosted: this thread may own the I/O loop
        try:
            return self._coro.send(value)
        finally:
            if guarded:
                guard.end()
            local.chain = local.on_block = local.on_unblock = local.scope = None
            aio.current = None
            held = _monotonic() - t0
            if held > aio.stall:
                _stalled(job, held)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:  # type: ignore[override]
        if val is None and tb is None:
            return self._step(self._coro.throw, typ)
        return self._step(lambda _: self._coro.throw(typ, val, tb), None)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Any:  # pragma: no cover - Tasks drive it by send/throw
        return self._coro.__await__()

    def _step(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        aio, job = self._aio, self._job
        aio.current = job
        aio.since = t0 = _monotonic()
        context.set_context(job.chain, job.on_block, job.on_unblock, job.scope)
        guard = aio.guard
        guarded = guard is not None and guard.begin()  # hosted: this thread may own the I/O loop
        try:
            return fn(arg)
        finally:
            if guarded:
                guard.end()
            context.set_context(None, None, None)
            aio.current = None
            held = _monotonic() - t0
            if held > aio.stall:
                _stalled(job, held)


def _stalled(job: Job, held: float) -> None:
    log.warning(
        "%s blocked the server's event loop for %.2f s: other coroutines could not run meanwhile "
        "(a blocking call inside async def? use await, or asyncio.to_thread)", job.label, held,
    )


def _in_context(job: Job, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    context.set_context(job.chain, job.on_block, job.on_unblock, job.scope)
    try:
        return fn(*args, **kwargs)
    finally:
        context.set_context(None, None, None)


class Aio:
    """The event loop of one server, started lazily."""

    def __init__(self, name: str = "mesh") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._loop: Any = None
        self._thread: threading.Thread | None = None
        self._executor: Any = None
        self._closed = False
        self._stop = threading.Event()
        self.cancelling = False  # set while the server cancels what still runs at shutdown
        self._jobs: set[Job] = set()
        self._pending: list[tuple[Job, Callable[[], Any]]] = []  # submitted, not yet begun on the loop
        self._woken = False  # the loop was asked to begin the pending ones
        # the I/O thread runs the loop when the server can have it so (node.host_event_loop):
        # coroutine calls then start and answer with no thread hop (transport._hosted)
        self.hosting: Callable[[Callable[[Any], None]], Any] | None = None
        self._host: Any = None  # the transport Host running the loop, if hosted
        self.guard: Any = None  # begin() / end() around each step when hosted (mesh.server._hosting)
        self.current: Job | None = None  # whose step runs now (written by the loop thread)
        self.since = 0.0  # when that step started
        self.stall = _stall_threshold()

    @property
    def running(self) -> int:
        """Coroutine calls on the loop now (started, not yet answered)."""
        return len(self._jobs)

    @property
    def started(self) -> bool:
        return self._loop is not None

    def unguard(self) -> None:
        """End the current step's guard early (its call's reply follows: no hand-off may come while
        the thread sends it). Loop thread; nothing if the step is not guarded."""
        guard = self.guard
        if guard is not None and guard.active:
            guard.end()

    @property
    def hosted(self) -> bool:
        """True if the server's I/O thread runs the loop."""
        return self._host is not None

    def on_loop(self) -> bool:
        """True on the loop's thread (once it runs)."""
        h = self._host
        if h is not None:
            return threading.get_ident() == h.ident
        t = self._thread
        return t is not None and threading.get_ident() == t.ident

    def submit(self, job: Job, main: Callable[[], Any]) -> bool:
        """Run ``main()`` (a coroutine) as ``job``'s task on the loop (any thread). False if the loop is closed."""
        h = self._host
        if h is not None and threading.get_ident() == h.ident:  # the hosting thread: the task at once
            with self._lock:
                if self._closed:
                    return False
                self._jobs.add(job)
            job.task = asyncio.Task(_Stepped(self, job, self._body(job, main)), loop=h.loop)
            return True
        with self._lock:
            if self._closed:
                return False
            loop = self._loop or self._start()
            self._jobs.add(job)
            self._pending.append((job, main))
            if self._woken:  # the loop will take this one with the others: one wake-up for a burst
                return True
            self._woken = True
        try:
            loop.call_soon_threadsafe(self._begin_pending)
        except RuntimeError:  # the loop closed meanwhile
            self._end(job)
            return False
        return True

    def cancel(self, job: Job) -> None:
        """Cancel ``job``'s task (any thread): ``CancelledError`` at its next await."""
        def stop() -> None:
            if job.task is not None:
                job.task.cancel()

        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(stop)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def shutting_down(self, exc: BaseException) -> bool:
        """True if ``exc`` is the cancellation the server's shutdown sent."""
        return self.cancelling and asyncio is not None and isinstance(exc, asyncio.CancelledError)

    # ------------------------------------------------------------ loop thread
    def _begin_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            self._woken = False
        for job, main in pending:
            job.task = asyncio.Task(_Stepped(self, job, self._body(job, main)), loop=self._loop)

    async def _body(self, job: Job, main: Callable[[], Any]) -> None:
        try:
            await main()
        except BaseException:  # noqa: BLE001 - main answers its caller; this is a bug in the server
            log.exception("coroutine call %s failed in the server", job.label)
        finally:
            self._end(job)

    def _end(self, job: Job) -> None:
        # the job no longer holds its task: task -> _Stepped -> job -> task was a cycle, so every
        # ended call left its task, coroutines and job to the collector (promoted while the call
        # slept, they waited for a generation-1 or 2 pass); now they go when the task does
        job.task = None
        with self._lock:  # (the lock of _idle: the C lock's own enter/exit, not the Condition's)
            jobs = self._jobs
            jobs.discard(job)
            if not jobs and self._idle._waiters:  # notified only if a drain waits (_wait_idle)
                self._idle.notify_all()

    def _task_factory(self, loop: Any, coro: Any, **kwargs: Any) -> Any:
        # a task created by a coroutine call (create_task, gather, wait_for...) steps in its context
        job = self.current
        if job is not None:
            coro = _Stepped(self, job, coro)
        return asyncio.Task(coro, loop=loop, **kwargs)

    def _start(self) -> Any:
        """Create the loop and its thread (caller holds the lock)."""
        global asyncio
        import asyncio as _asyncio
        from concurrent.futures import ThreadPoolExecutor

        asyncio = _asyncio
        aio = self

        class Executor(ThreadPoolExecutor):
            """The loop's default executor: work submitted by a step runs in that step's call context."""

            def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
                job = aio.current
                if job is not None:
                    fn = functools.partial(_in_context, job, fn)
                return super().submit(fn, *args, **kwargs)

        self._executor = Executor(thread_name_prefix=f"mesh-{self._name}-aio-exec")

        def setup(loop: Any) -> None:
            loop.set_default_executor(self._executor)
            loop.set_task_factory(self._task_factory)

        host = None
        if self.hosting is not None and os.environ.get(HOSTED_ENV, "1") != "0":
            try:
                host = self.hosting(setup)
            except Exception:  # pragma: no cover - a loop of its own instead
                log.exception("could not run the event loop on the I/O thread")
        if host is not None:
            self._host = host
            loop = host.loop
        else:
            self.guard = None
            loop = _asyncio.new_event_loop()
            setup(loop)
            self._thread = threading.Thread(target=loop.run_forever, name=f"mesh-{self._name}-aio", daemon=True)
            self._thread.start()
        self._loop = loop
        threading.Thread(target=self._watch, name=f"mesh-{self._name}-aio-watch", daemon=True).start()
        return loop

    def _watch(self) -> None:
        """Report a step that has held the loop for :data:`_STUCK` s and still does (it may never end)."""
        while not self._stop.wait(max(self.stall, 0.5)):
            job, since = self.current, self.since
            if job is not None and not job.reported and time.monotonic() - since > _STUCK:
                job.reported = True
                log.warning("%s has been blocking the server's event loop for %.0f s and still does",
                            job.label, time.monotonic() - since)

    # --------------------------------------------------------------- shutdown
    def close(self, timeout: float) -> None:
        """Let coroutine calls finish for ``timeout`` s, cancel the rest (their callers are told), stop the loop."""
        with self._lock:
            self._closed = True
            loop = self._loop
        if loop is None:
            return
        self._wait_idle(timeout)
        self.cancelling = True
        try:
            loop.call_soon_threadsafe(self._cancel_all)
        except RuntimeError:
            pass
        self._wait_idle(1.0)
        self._stop.set()
        try:
            loop.call_soon_threadsafe(loop.stop)
        except RuntimeError:
            pass
        host = self._host
        if host is not None:
            stopped = host.done.wait(2.0) if not self.on_loop() else False
        else:
            if self._thread is not None:
                self._thread.join(2.0)
            stopped = self._thread is None or not self._thread.is_alive()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if stopped:
            loop.close()

    def _wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._jobs:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def _cancel_all(self) -> None:
        for task in asyncio.all_tasks(self._loop):  # the calls' tasks and the tasks they made
            task.cancel()
