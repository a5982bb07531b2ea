"""One call on a worker: decode the arguments, set the call context, invoke, encode the reply.

:class:`CallRunner` also schedules an actor's mailbox on the worker pool: a worker that ends a
call goes on with the next call of the same actor (a thread switch per call would halve one
actor's throughput), and after :data:`_BATCH` calls goes to the back of the pool's queue so
other actors get their turn. Actors made runnable while the I/O thread reads a burst of
requests start after the burst (or every :data:`_READY_MAX`), so a worker wakes to several
calls, not one each.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import types
from typing import Any, Callable

import transport
from mesh._core import context, tracing
from mesh._core import wire
from mesh._core.methods import runs_on_loop
from mesh._core.wire import Entry
from mesh._errors import Cancelled
from mesh.server._loop_calls import loop_job, start as start_on_loop
from mesh.server._aio import Aio, Job
from mesh.server._cancel import Cancels
from mesh.server._entries import call_error, checked_value, ok, remote_error, result_of
from mesh.server._inline import InlinePolicy, Watchdog
from mesh.server._mailbox import Actor, Call
from mesh.server._results import Results, shut_down
from mesh.server._stats import CallStats
from mesh.server._stream_run import merge_of, run_async, run_sync
from mesh.server._streams import Streams
from mesh.server._workers import WorkerPool

__all__ = ["PUSH_LIMIT", "CallRunner", "call_error", "ok", "remote_error", "result_of"]

log = logging.getLogger("mesh.server")

_READY_MAX = 8  # actors made runnable by one burst of requests before their workers are woken
_BATCH = 64  # calls of one actor run back to back on one worker before yielding it
PUSH_LIMIT = 64 * 1024  # async results up to this size are pushed to the caller with the reply


class CallRunner:
    """Runs the calls of a server's actors on its worker pool and answers them."""

    def __init__(
        self, workers: WorkerPool, results: Results, accepting: Callable[[], bool], aio: Aio | None = None,
        streams: Streams | None = None,
    ) -> None:
        self.workers = workers
        self.streams = streams or Streams()  # the items of streaming calls (@stream_func)
        self.aio = aio or Aio()  # coroutine methods run there
        self.results = results
        self._accepting = accepting
        self._io_ident: int | None = None  # the I/O thread, set by the server (or followed on its node)
        self.node: Any = None  # the transport Node (set by the host): inline calls need its hand_off_io
        self._ready: list[tuple[Actor, Call]] = []
        self.stats = CallStats()  # calls, errors and latency by class and method (status, /metrics)
        # a durable object's call that ended: checkpoint it before the reply (mesh.server._checkpoint)
        self.checkpoint: Callable[[Actor, Entry], Entry] = lambda actor, entry: entry
        self.cancels = Cancels(self)  # calls with a task id or a deadline, for op cancel
        self.inline = InlinePolicy()  # which methods are short enough to run on the I/O thread
        self.watchdog = Watchdog(self._hand_off)
        # told the ident of an inline call's thread just before the I/O loop is handed off from it
        # (the async fast lane registers its call then: mesh.server._async_fast)
        self.on_hand_off: Callable[[int], None] | None = None

    @property
    def io_ident(self) -> int | None:
        """The I/O thread now (it changes when an inline call hands the loop off)."""
        node = self.node
        return node.io_ident if node is not None else self._io_ident

    @io_ident.setter
    def io_ident(self, ident: int | None) -> None:
        self._io_ident = ident

    def admit(self, actor: Actor, call: Call, inline: bool = False) -> None:
        """Run ``call`` now, or leave it in the mailbox (I/O thread or a worker).

        ``inline``: the I/O thread read it from a request; if the actor is idle and the method
        is known to be short (:mod:`mesh.server._inline`), it runs right here.
        """
        admitted = actor.admit(call)
        if admitted is False:
            return
        if admitted is not True:
            self.unrun(call, wire.err_entry(wire.K_NOTFOUND, f"object {actor.id} is gone: {admitted}"))
        elif start_on_loop(self, actor, call):  # a small coroutine call: to the event loop, no worker
            return
        elif threading.get_ident() == self.io_ident:
            if (inline and actor.running == 1 and actor.durable is None and self.node is not None
                    and self.inline.allows(type(actor.obj), call.method)
                    and not (call.keep and self.streams.states and call.task in self.streams.states)):
                self._run_inline(actor, call)
                return
            self._ready.append((actor, call))
            if len(self._ready) >= _READY_MAX:
                self.start_ready()
        else:
            self.workers.submit(lambda: self._run(actor, call))

    def start_ready(self) -> None:
        """Hand the actors made runnable by the last burst to workers (I/O thread)."""
        if not self._ready:  # (after every burst: mostly nothing)
            return
        ready, self._ready = self._ready, []
        for actor, call in ready:
            try:
                self.workers.submit(lambda actor=actor, call=call: self._run(actor, call))
            except RuntimeError:  # the pool closed: the server is shutting down
                self.unrun(call, shut_down())

    def next(self, actor: Actor) -> None:
        """Start the next call of the actor's mailbox on a worker, if any."""
        call = actor.take_next()
        if call is not None and not start_on_loop(self, actor, call):
            self._submit(actor, call)

    def _submit(self, actor: Actor, call: Call) -> None:
        try:
            self.workers.submit(lambda: self._run(actor, call))
        except RuntimeError:  # the pool closed: the server is shutting down
            self.unrun(call, shut_down())

    def unrun(self, call: Call, entry: Entry) -> None:
        """Answer a call that will never run. Its arguments are still decoded (on a worker) and
        dropped, so that futures inside them tell their producers they are gone."""
        self.complete(call, entry)
        self.drop_body(call.body, call.buffers)

    def drop_body(self, body: Any, buffers: list) -> None:
        def drop() -> None:
            try:
                transport.decode(body, buffers)
            except Exception:
                pass

        try:
            self.workers.submit(drop)
        except RuntimeError:  # shutting down: those results expire at their producers instead
            pass

    def _run(self, actor: Actor, call: Call) -> None:
        next_call: Call | None = call
        for _ in range(_BATCH):
            if self._run_one(actor, next_call):  # type: ignore[arg-type]
                return  # a coroutine: the loop starts the actor's next call when it ends
            if self._back_to_io(actor):
                return
            next_call = actor.take_next()
            if next_call is None:
                return
        self.workers.submit(lambda: self._run(actor, next_call))

    def _inline_ok(self, actor: Actor, call: Call) -> bool:
        """Whether ``call`` of ``actor`` may run on the I/O thread (as :meth:`admit` decides)."""
        return (self.node is not None and actor.durable is None and self.inline.allows(type(actor.obj), call.method)
                and not (call.keep and self.streams.states and call.task in self.streams.states))

    def _back_to_io(self, actor: Actor) -> bool:
        """A worker ended a call and the actor's next queued call may run inline (its method is
        short again: a slow run or a warm-up sent a pipelined actor to a worker, and its queue kept
        it there, since new calls only run inline on an idle actor). The I/O thread takes the
        mailbox over (:meth:`_drain_inline`); the actor stays admitted in between (arrival order).
        True if it did."""
        queue = actor.queue
        if not queue or actor.running != 1 or self.node is None:
            return False
        try:
            call = queue[0]
        except IndexError:  # withdrawn meanwhile (a cancel)
            return False
        if not self._inline_ok(actor, call):
            return False
        self.node.call_soon(self._drain_inline, actor)
        return True

    def _drain_inline(self, actor: Actor) -> None:
        """Run the actor's queued calls on the I/O thread, in order, while they may run inline."""
        ident = threading.get_ident()
        for _ in range(_BATCH):
            call = actor.take_next()  # (the admission this takes over from the worker ends here)
            if call is None:
                return
            if start_on_loop(self, actor, call):  # a coroutine: its task starts the actor's next call
                return
            if ident != self.io_ident or not self._inline_ok(actor, call):
                self._submit(actor, call)  # the rest on workers, as before
                return
            if self._run_one(actor, call, ident):
                return
            if threading.get_ident() != self.io_ident:  # handed off while it ran: the rest on workers
                self.next(actor)
                return
        self.node.call_after_poll(self._drain_inline, actor)  # the rest in the next turn: requests are read first

    # -------------------------------------------------------- inline calls
    def _run_inline(self, actor: Actor, call: Call) -> None:
        """Run a short call of an idle actor on the I/O thread (see :mod:`mesh.server._inline`)."""
        if not self._run_one(actor, call, threading.get_ident()):  # (True: a coroutine, the loop goes on)
            self.next(actor)

    def _hand_off(self, ident: int) -> bool:
        """Inline call on thread ``ident`` waits or stalls: a new thread takes the I/O loop."""
        if ident != self.io_ident or self.node is None:
            return False
        if self.on_hand_off is not None:
            self.on_hand_off(ident)
        self.start_ready()  # what the burst made runnable so far: the old thread will not
        return self.node.hand_off_io(ident)

    def _run_one(self, actor: Actor, call: Call, inline: int = 0) -> bool:
        """Run ``call`` here, or hand it to the event loop if it is a coroutine method (True).

        ``inline``: the ident of the I/O thread running it (:meth:`_run_inline`), else 0 (a worker).
        """
        chain = call.chain
        waited = False

        if inline:
            def on_block() -> None:
                nonlocal waited
                waited = True
                with self.watchdog.lock:
                    if self.watchdog.current is not None:
                        self.watchdog.current = None
                        self._hand_off(inline)
                for c in actor.block(chain):
                    self._submit(actor, c)

            def on_unblock() -> None:
                actor.unblock(chain)
        else:
            def on_block() -> None:
                nonlocal waited
                waited = True
                for c in actor.block(chain):
                    self.workers.submit(lambda c=c: self._run(actor, c))
                self.workers.block()

            def on_unblock() -> None:
                self.workers.unblock()
                actor.unblock(chain)

        if not self._accepting():
            self.unrun(call, shut_down())
            return False
        scope = call.scope
        if scope is not None and not self.cancels.starting(scope):  # cancelled, or its deadline passed
            self.unrun(call, shut_down())  # answered already: this only drops the arguments
            return False
        if tracing.enabled():
            call.trace = tracing.server_span(call.trace, type(actor.obj).__name__, call.method)
        context.set_context(chain, on_block, on_unblock, scope)
        try:
            # decoded here, on a worker, also for a coroutine: unpickling runs user code (classes
            # sent by value, __setstate__) and may be large: it must not hold the event loop
            args, kwargs = transport.decode(call.body, call.buffers)
            if call.method.startswith("_") and call.method != "__call__":
                raise AttributeError(f"{call.method!r} is private: private methods are never called remotely")
            fn = getattr(actor.obj, call.method)
            on_loop = runs_on_loop(type(actor.obj), call.method, fn)
            if call.trace is not None and type(call.trace) is tracing.ServerSpan:
                fn = call.trace.bind(fn, on_loop)
            if on_loop:
                if self._to_loop(actor, call, fn, args, kwargs):
                    return True
                entry = shut_down()
            else:
                stream = self.streams.states.get(call.task) if call.keep and self.streams.states else None
                if stream is not None:  # a generator: its items go to the stream's readers as it runs
                    stream.host = (actor, self._submit)  # its readers' chains may enter while it is paused
                    entry = ok(run_sync(self.streams, stream, fn(*args, **kwargs), merge_of(actor.obj, call.method)))
                else:
                    if inline:  # the watchdog covers the method only: after it, this thread sends the reply
                        self.watchdog.begin(inline)  # (it may start the watchdog's thread: not timed)
                        try:
                            t = time.perf_counter()
                            value = fn(*args, **kwargs)
                            t = time.perf_counter() - t
                        finally:
                            self.watchdog.end(inline)
                    else:
                        t = time.perf_counter()
                        value = fn(*args, **kwargs)
                        t = time.perf_counter() - t  # the method's own time (not the reply's encoding)
                    entry = ok(result_of(type(actor.obj), call.method, value))
                    if waited:
                        self.inline.waited(type(actor.obj), call.method)
                    else:
                        self.inline.record(type(actor.obj), call.method, t)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            entry = call_error(exc)
            if waited:
                self.inline.waited(type(actor.obj), call.method)
        finally:
            context.set_context(None, None, None)
        actor.served += 1
        if actor.durable is not None:
            entry = self.checkpoint(actor, entry)
        self.stats.record(actor.cls_name, call.method, call.t0, entry[0])
        self.complete(call, entry)
        return False

    # ------------------------------------------------------------ coroutines
    def _to_loop(self, actor: Actor, call: Call, fn: Callable, args: Any, kwargs: Any) -> bool:
        """Start a coroutine call on the event loop; it holds the actor's mailbox until it ends."""
        job = loop_job(self, actor, call)
        scope = call.scope
        if scope is not None:
            scope.job = job
        return self.aio.submit(job, lambda: self._main(actor, call, job, fn, args, kwargs))

    async def _main(self, actor: Actor, call: Call, job: Job, fn: Callable, args: Any, kwargs: Any) -> None:
        """The task of one coroutine call (loop thread): invoke, encode, answer, start the next call."""
        value: Any = None
        try:
            if job.scope is not None and job.scope.why is not None:  # cancelled before its task began
                raise Cancelled("cancelled before it started")
            value = fn(*args, **kwargs)
            stream = self.streams.states.get(call.task) if call.keep and self.streams.states else None
            if stream is not None:  # an async generator: its items go to the stream's readers as it runs
                stream.host = (actor, self._submit)
                value = await run_async(self.streams, stream, value, merge_of(actor.obj, call.method))
            elif type(value) is types.CoroutineType:  # an async def (or AgentBase.__call__ forwarding to one)
                value = await value
            entry = ok(checked_value(job.label, value))
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            if self.aio.shutting_down(exc):
                entry = wire.err_entry(wire.K_UNAVAILABLE, f"server shut down while running this call ({job.label})")
            else:
                entry = call_error(exc)
        value = args = kwargs = None  # noqa: F841 - not kept alive by the task while the reply goes
        actor.served += 1
        if actor.durable is not None:  # saved off the loop: file or Redis I/O must not hold it
            entry = await sys.modules["asyncio"].to_thread(self.checkpoint, actor, entry)
        self.stats.record(actor.cls_name, call.method, call.t0, entry[0])
        self.aio.unguard()  # hosted: the step can no longer be handed off, its reply goes straight out
        self.complete(call, entry)
        self.next(actor)

    def complete(self, call: Call, entry: Entry) -> None:
        """The call ended (or will never run): answer it, unless a cancel answered it already."""
        scope = call.scope
        if scope is not None:
            entry = self.cancels.ended(scope, entry)  # type: ignore[assignment]
            if entry is None:
                return
        self.answer(call, entry)

    def answer(self, call: Call, entry: Entry) -> None:
        """Answer the call; an async one's result goes to the store first (and to its fetches)."""
        if call.trace is not None:
            tracing.end_server(call.trace, entry[0])
        if not call.keep:
            call.reply(entry)
            return
        big = entry[0]["op"] == wire.OK and len(entry[1]) + sum(len(b) for b in entry[2]) > PUSH_LIMIT
        said = False  # the caller's "big" reply went out
        if big and not self.streams.states:  # (with streams kept: after their end, as before)
            # the caller's short "big" reply goes out before the value's fetch replies: it is not
            # queued behind them, and a caller whose future went reports it at once (it knows the
            # reply said big) rather than with the release batch (mesh.client._holders)
            def first(stored: bool) -> None:
                nonlocal said
                if stored:
                    call.reply(({"op": wire.OK, "big": 1}, wire.NIL, []))  # the caller fetches it if it reads it
                    said = True

            stored = self.results.complete(call.task, call.sess, entry, first)
        else:
            stored = self.results.complete(call.task, call.sess, entry)
        if self.streams.states:
            self.streams.finish(call.task, entry)  # its readers get how it ended, after its items
        if said:
            return
        if big and stored:
            call.reply(({"op": wire.OK, "big": 1}, wire.NIL, []))
        else:
            # a value pushed with the reply is the caller's to read whenever it likes: while the
            # caller holds its future, the result is held here too (never dropped by max_len)
            call.reply(entry)
