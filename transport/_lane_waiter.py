"""What an ``await`` of a lane's future yields to its asyncio Task: an asyncio-compatible future
(``asyncio.isfuture``) that the lane's reader wakes (``LaneFuture.wait_on_loop``).

An asyncio future schedules its done-callbacks (the Task's wake-up) with ``call_soon``: the
awaiting Task then runs in the loop iteration after the one that read the reply. This one runs
the wake-up right away when it is woken by a callback of its running loop with no task running
(the lane's reader, called by the loop for its socket, or a wake-up handed over from another
thread): the reply is read and the awaiting coroutine resumed in one loop iteration, one
``epoll_wait`` and one pass of the loop's bookkeeping fewer per round trip. The reader resumes
one Task so per call, the others in the next loop turn (an await chain whose replies keep coming
must not hold the loop: other callbacks and timers get their turn). Anywhere else
(inside a task, on a thread driving the lane while its loop is stopped or blocked, on another
thread) it schedules the wake-up as an asyncio future does. A cancelled waiter (its Task was
cancelled) wakes the Task with ``CancelledError``, as an asyncio future does.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

__all__ = ["Waiter"]

_PENDING, _DONE, _CANCELLED = 0, 1, 2


def _current_task(loop: Any) -> Any:
    """``asyncio.current_task(loop)``: the C module's table read directly where it has one (3.8-3.13)."""
    global _current_task
    tasks = sys.modules["asyncio"].tasks
    table = getattr(tasks, "_current_tasks", None)
    _current_task = table.get if isinstance(table, dict) else tasks.current_task
    return _current_task(loop)


class Waiter:
    """A one-shot asyncio future of ``loop`` whose result is None."""

    __slots__ = ("loop", "ident", "state", "callbacks", "_asyncio_future_blocking")

    def __init__(self, loop: Any, ident: int) -> None:
        self.loop = loop
        self.ident = ident  # the loop's thread
        self.state = _PENDING
        self.callbacks: list[tuple[Any, Any]] = []
        self._asyncio_future_blocking = False

    # -- asyncio's future protocol (what a Task and asyncio.isfuture ask) ----------
    def get_loop(self) -> Any:
        return self.loop

    def done(self) -> bool:
        return self.state != _PENDING

    def cancelled(self) -> bool:
        return self.state == _CANCELLED

    def result(self) -> None:
        if self.state == _CANCELLED:
            raise sys.modules["asyncio"].CancelledError()
        if self.state == _PENDING:
            raise sys.modules["asyncio"].InvalidStateError("the reply has not come")

    def exception(self) -> BaseException | None:
        self.result()
        return None

    def add_done_callback(self, fn: Any, *, context: Any = None) -> None:
        if self.state == _PENDING:
            self.callbacks.append((fn, context))
        else:
            self.loop.call_soon(fn, self, context=context)

    def remove_done_callback(self, fn: Any) -> int:
        before = len(self.callbacks)
        self.callbacks = [c for c in self.callbacks if c[0] != fn]
        return before - len(self.callbacks)

    def cancel(self, msg: Any = None) -> bool:
        if self.state != _PENDING:
            return False
        self.state = _CANCELLED
        self._schedule()
        return True

    def __await__(self) -> Any:
        if self.state == _PENDING:
            self._asyncio_future_blocking = True
            yield self
        return self.result()

    __iter__ = __await__

    def __repr__(self) -> str:
        return f"<lane Waiter {('pending', 'done', 'cancelled')[self.state]}>"

    # -- the lane's side --------------------------------------------------------
    def wake(self, inline: bool) -> None:
        """The lane's future is done (the loop's thread); ``inline``: the Task may be resumed here."""
        if self.state != _PENDING:
            return  # cancelled: the Task was woken then
        self.state = _DONE
        loop = self.loop
        if (inline and threading.get_ident() == self.ident and loop.is_running()
                and _current_task(loop) is None):
            callbacks, self.callbacks = self.callbacks, []
            for fn, context in callbacks:  # the Task's wake-up: the coroutine runs on from here
                if context is None:
                    fn(self)
                else:
                    context.run(fn, self)
        else:
            self._schedule()

    def _schedule(self) -> None:
        callbacks, self.callbacks = self.callbacks, []
        for fn, context in callbacks:
            self.loop.call_soon(fn, self, context=context)
