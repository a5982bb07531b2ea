"""The cancel registry of one server: its queued and running calls by task id, their deadlines.

Every call that carries a ``task`` (async calls; sync calls made from inside a call) or a
deadline (header ``dl``, seconds left) gets a :class:`TaskScope` when it arrives. Op ``cancel``
finds it by task id:

* still queued: taken out of its actor's mailbox, answered ``cancelled``; it never runs;
* running a coroutine: its asyncio task is cancelled (``CancelledError`` at its next await);
* running a sync method: ``mesh.cancelled()`` becomes true there (cooperative);

and in every case the call is answered at once (``cancelled``, or ``deadline`` when its
deadline passed), its result stored as that error for every reader, and ``cancel`` is sent on
to the server of every call it made (:class:`mesh._core.cancel.Scope`), which does the same.
The actor's mailbox stays held until the method really returns (actor semantics).

A deadline is enforced here too: a call whose deadline passed before it started never starts,
and one still running then is cancelled by a timer thread (started by the first deadline).

A cancel for a task this server does not know (finished, never seen) changes nothing, except
that its id is remembered for a while (:data:`_TOMBS_MAX` ids): a call that arrives after its
cancel (it took another connection) is answered ``cancelled`` and never runs.

Seam for producers that are not calls (e.g. a stream's generator): :meth:`Cancels.register` a
close function under a task id; ``cancel`` of that id calls it once.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Callable

from mesh._core import wire
from mesh._core.cancel import Scope
from mesh._core.wire import Entry

__all__ = ["Cancels", "TaskScope", "stopped_entry"]

log = logging.getLogger("mesh.server")

_TOMBS_MAX = 10_000  # ids of tasks cancelled before (or without) arriving, remembered
QUEUED, RUNNING, ENDED, STOPPED = 0, 1, 2, 3  # STOPPED: it ended on seeing its cancel


def stopped_entry(task: str | None, why: str) -> Entry:
    """The reply of a call stopped by a cancel (``why`` cancel) or its deadline."""
    if why == wire.WHY_DEADLINE:
        return wire.err_entry(wire.K_DEADLINE, f"task {task}: its deadline passed before it ended", "DeadlineExceeded")
    return wire.err_entry(wire.K_CANCELLED, f"task {task} was cancelled", "Cancelled")


class TaskScope(Scope):
    """The scope of one call of this server, queued or running."""

    __slots__ = ("registry", "call", "actor", "job", "sess", "state", "answered")

    def __init__(self, registry: Cancels, task: str | None, deadline: float | None, call: Any, actor: Any, sess: Any) -> None:
        # every async call makes one: Scope's fields set here, without the call to its __init__
        self.task = task
        self.deadline = deadline
        self.why: str | None = None
        self.children: dict[str, str] = {}
        self.on_cancel = None
        self.registry = registry
        self.call = call
        self.actor = actor
        self.job: Any = None  # the event-loop job, for a coroutine method
        self.sess = sess
        self.state = QUEUED
        self.answered = False

    def _stopped(self, why: str) -> bool:
        return self.registry.stopped(self, why)


class Cancels:
    """Queued and running calls by task id (thread-safe: I/O thread, workers, the timer)."""

    def __init__(self, runner: Any) -> None:
        self._runner = runner  # CallRunner: answer(), drop_body(), aio
        self._scopes: dict[str, Scope] = {}
        self._stuck: set[TaskScope] = set()  # cancelled sync methods that still run (cooperative)
        self._tombs: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self._timer: _Timer | None = None

    def __len__(self) -> int:
        return len(self._scopes)

    # -- a call's life ----------------------------------------------------------------------------
    def arrive(self, call: Any, actor: Any, task: str | None, dl: float | None, sess: Any) -> Entry | None:
        """A call with a task id or a deadline arrived: its scope. An entry: answer it so, never run it."""
        deadline = None if dl is None else time.monotonic() + dl
        scope = call.scope = TaskScope(self, task, deadline, call, actor, sess)
        why = None
        if task is not None:
            # (no lock: single dict operations; a cancel that finds no scope yet leaves a tomb)
            self._scopes[task] = scope
            if self._tombs:
                with self._lock:
                    why = self._tombs.pop(task, None)
        if why is None and dl is not None and dl <= 0:
            why = wire.WHY_DEADLINE
        if why is not None:
            scope.why = why
            return stopped_entry(task, why)
        if deadline is not None:
            self._timer_add(scope)
        return None

    def starting(self, scope: TaskScope) -> bool:
        """A worker is about to run the call: False if it must not (cancelled, deadline passed)."""
        if scope.why is None and scope.deadline is not None and time.monotonic() >= scope.deadline:
            scope.cancel(wire.WHY_DEADLINE)
        with self._lock:
            if scope.why is None:
                scope.state = RUNNING
                return True
        return False

    def ended(self, scope: TaskScope, entry: Entry) -> Entry | None:
        """The call ended (or will never run) with ``entry``: what to answer, or None if answered already."""
        with self._lock:
            scope.state = ENDED
            self._stuck.discard(scope)
            if scope.task is not None and self._scopes.get(scope.task) is scope:
                del self._scopes[scope.task]
            answered, scope.answered = scope.answered, True
            if not answered and scope.why is not None:
                scope.state = STOPPED  # answered as stopped: the cancel that set ``why`` did stop it
        scope.call = scope.actor = scope.job = None  # a deadline timer may hold the scope a while
        if answered:
            return None
        if scope.why is not None:  # cancelled while it ended (or before it ran): readers see that
            return stopped_entry(scope.task, scope.why)
        return entry

    def stopped(self, scope: TaskScope, why: str) -> bool:
        """``scope`` was just cancelled: answer its call, take it out of the mailbox or stop it."""
        with self._lock:
            if scope.answered:  # it ended first: by itself (False), or on seeing this cancel (its
                return scope.state == STOPPED  # why is set before stopped() runs: Scope.cancel)
            scope.answered = True
            if scope.task is not None and self._scopes.get(scope.task) is scope:
                del self._scopes[scope.task]
            state = scope.state
            if state == RUNNING and scope.job is None:
                self._stuck.add(scope)
            call, actor, job = scope.call, scope.actor, scope.job
        runner = self._runner
        streams = getattr(runner, "streams", None)
        if state == RUNNING and streams is not None and streams.states and scope.task in streams.states:
            # a stream's generator: closed at its next item (sync ones too); before the answer,
            # which ends the stream for its readers (and after which stop() sees it as ended)
            streams.stop(scope.task)
        runner.answer(call, stopped_entry(scope.task, why))
        if state == QUEUED and actor is not None and actor.withdraw(call):
            scope.call = scope.actor = None
            runner.drop_body(call.body, call.buffers)  # futures in its arguments are released
        elif job is not None:
            runner.aio.cancel(job)
        return True

    # -- op cancel --------------------------------------------------------------------------------
    def cancel(self, task: str, why: str = wire.WHY_CANCEL) -> bool:
        """Cancel ``task`` and what it started; True if it was queued or running (now stopped)."""
        with self._lock:
            scope = self._scopes.get(task)
            if scope is None:
                self._tombs[task] = why
                if len(self._tombs) > _TOMBS_MAX:
                    self._tombs.popitem(last=False)
                return False
        return scope.cancel(why)

    def cancel_session(self, sess: str, why: str = wire.WHY_CANCEL) -> int:
        """Cancel every queued or running call of session ``sess`` (its client was interrupted)."""
        with self._lock:
            scopes = [s for s in self._scopes.values() if getattr(s, "sess", None) == sess]
        return sum(1 for s in scopes if s.cancel(why))

    def cancel_orphans(self) -> int:
        """Cancel the running calls of objects that are gone (their creator left: nobody can read them)."""
        with self._lock:
            scopes = [s for s in self._scopes.values() if getattr(getattr(s, "actor", None), "failed", None)]
        return sum(1 for s in scopes if s.cancel(wire.WHY_CANCEL))

    def stuck(self) -> int:
        """Cancelled sync methods still running (they did not check ``mesh.cancelled()``)."""
        return len(self._stuck)

    # -- producers that are not calls (seam: streams) ---------------------------------------------
    def register(self, task: str, close: Callable[[str], Any], deadline: float | None = None) -> Scope:
        """``cancel`` of ``task`` calls ``close(why)`` once (until :meth:`unregister`)."""
        scope = Scope(task, deadline, on_cancel=close)
        with self._lock:
            self._scopes[task] = scope
        if deadline is not None:
            self._timer_add(scope)
        return scope

    def unregister(self, task: str) -> None:
        with self._lock:
            self._scopes.pop(task, None)

    # -- deadlines --------------------------------------------------------------------------------
    def _timer_add(self, scope: Scope) -> None:
        timer = self._timer
        if timer is None:
            with self._lock:
                timer = self._timer = self._timer or _Timer(self)
        timer.add(scope)

    def fire(self, scope: Scope) -> None:
        """A scope's deadline passed (timer thread)."""
        if scope.why is None and (not isinstance(scope, TaskScope) or not scope.answered):
            scope.cancel(wire.WHY_DEADLINE)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.close()


class _Timer:
    """One thread that cancels scopes at their deadlines (a heap; started by the first deadline)."""

    def __init__(self, cancels: Cancels) -> None:
        self._cancels = cancels
        self._heap: list[tuple[float, int, Scope]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        threading.Thread(target=self._run, name="mesh-deadlines", daemon=True).start()

    def add(self, scope: Scope) -> None:
        with self._cond:
            heapq.heappush(self._heap, (scope.deadline, next(self._seq), scope))  # type: ignore[arg-type]
            if self._heap[0][2] is scope:
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    left = self._heap[0][0] - time.monotonic() if self._heap else None
                    if left is not None and left <= 0:
                        break
                    self._cond.wait(left)
                if self._closed:
                    return
                _, _, scope = heapq.heappop(self._heap)
            try:
                self._cancels.fire(scope)
            except Exception:  # noqa: BLE001 - the timer must outlive one failed cancel
                log.exception("could not cancel task %s at its deadline", scope.task)
