"""An actor's mailbox: its calls run one at a time, in arrival order.

One exception prevents the A->B->A deadlock: while a call of call chain *C* waits on another
mesh task, a new call of the same chain *C* may enter the object (re-entrancy along one call
tree, as in Orleans).

Pure bookkeeping: no sockets, no threads of its own. Each method takes the actor's lock and
returns what the caller must run; running it (on the worker pool) is :mod:`mesh.server._calls`'.
"""

from __future__ import annotations

import threading
import time
import types
from collections import deque
from typing import Any, Callable

__all__ = ["Actor", "Call"]


class Call:
    """One request to call a method: where to reply, what to run, and its task if async."""

    __slots__ = ("reply", "method", "body", "buffers", "chain", "task", "keep", "sess", "trace", "t0", "scope")

    def __init__(
        self, reply: Callable, method: str, body: Any, buffers: list, chain: Any, task: Any, keep: bool,
        sess: str | None = None, trace: Any = None,
    ) -> None:
        self.reply = reply
        self.method = method
        self.body = body
        self.buffers = buffers
        self.chain = chain
        self.task = task
        self.keep = keep
        self.sess = sess  # the caller's session: while it lives (and holds the task), the result is held
        self.trace = trace  # the caller's trace context (tracing.carrier), then the server span once running
        self.t0 = time.monotonic()  # arrival: a call's latency (server stats) includes its wait in the mailbox
        self.scope: Any = None  # its cancel scope (mesh.server._cancel), with a task id or a deadline


_NO_QUEUE: tuple = ()  # an actor's empty mailbox (shared; a deque is made when a call waits)
_NO_BLOCKED = types.MappingProxyType({})  # no running call waits (shared, read only)


class Actor:
    """An object of this server and its mailbox."""

    __slots__ = ("id", "obj", "cls_name", "lock", "queue", "running", "blocked", "served", "session", "created", "failed", "name",
                 "durable")

    def __init__(self, object_id: str, cls_name: str, session: Any, name: str | None = None) -> None:
        self.id = object_id
        self.obj: Any = None
        self.cls_name = cls_name
        self.lock = threading.Lock()
        self.queue: deque[Call] | tuple = _NO_QUEUE  # a deque while calls wait (760 bytes: not for every actor)
        self.running = 1  # the constructor runs first
        self.blocked: Any = _NO_BLOCKED  # chain -> running calls of it that wait (a dict while any)
        self.served = 0
        self.session = session
        self.created = time.time()
        self.failed: str | None = None
        self.name = name  # registered name of a detached object
        self.durable: Any = None  # a durable object's checkpoint state (mesh.server._checkpoint.Durable)

    def admit(self, call: Call) -> str | bool:
        """A call arrives: True if it runs now, False if it waits in the mailbox, else why the actor is gone."""
        with self.lock:
            if self.failed:
                return self.failed
            if self.running == 0 or (call.chain is not None and self.blocked.get(call.chain)):
                self.running += 1
                return True
            if self.queue is _NO_QUEUE:
                self.queue = deque()
            self.queue.append(call)  # type: ignore[union-attr]
            return False

    def enter_idle(self) -> bool:
        """A fast lane's call arrives: True if the actor was idle (nothing running or queued, not
        failed) and the call now runs; False changes nothing (the general path, :meth:`admit`, decides).
        The lane ends the call with :meth:`leave_idle`, else ``take_next``."""
        with self.lock:
            if self.running or self.failed:
                return False
            self.running = 1
            return True

    def leave_idle(self) -> bool:
        """The call that entered by :meth:`enter_idle` ended: True if the actor is idle again (no
        re-entered call runs, nothing queued); False changes nothing (the caller runs ``take_next``)."""
        with self.lock:
            if self.running == 1 and not self.queue:
                self.running = 0
                return True
            return False

    def withdraw(self, call: Call) -> bool:
        """Take a queued call out of the mailbox (it was cancelled); False if it is not queued (any more)."""
        with self.lock:
            try:
                self.queue.remove(call)  # type: ignore[union-attr]
            except (ValueError, AttributeError):  # not queued (or nothing is: the shared empty tuple)
                return False
            return True

    def take_next(self) -> Call | None:
        """The call that just ended frees the actor: the next call of its mailbox, now running."""
        with self.lock:
            self.running -= 1
            if self.running or not self.queue:
                return None
            self.running = 1
            call = self.queue.popleft()  # type: ignore[union-attr]
            if not self.queue:
                self.queue = _NO_QUEUE
            return call

    def block(self, chain: Any) -> list[Call]:
        """A running call of ``chain`` waits on another task: the queued calls of that chain, now running."""
        ready: list[Call] = []
        with self.lock:
            if self.blocked is _NO_BLOCKED:
                self.blocked = {}
            self.blocked[chain] = self.blocked.get(chain, 0) + 1
            if chain is not None and self.queue:
                keep: deque[Call] = deque()
                for c in self.queue:
                    (ready if c.chain == chain else keep).append(c)
                self.queue = keep if keep else _NO_QUEUE
                self.running += len(ready)
        return ready

    def unblock(self, chain: Any) -> None:
        """The waiting call of ``chain`` goes on."""
        with self.lock:
            n = self.blocked.get(chain, 1) - 1
            if n:
                self.blocked[chain] = n
            elif self.blocked:
                self.blocked.pop(chain, None)
                if not self.blocked:
                    self.blocked = _NO_BLOCKED

    def fail(self, why: str, keep_reason: bool = False) -> list[Call]:
        """The actor is gone (deleted, its constructor failed, the server stops): its queued calls, taken out."""
        with self.lock:
            self.failed = (self.failed or why) if keep_reason else why
            queued, self.queue = list(self.queue), _NO_QUEUE
        return queued
