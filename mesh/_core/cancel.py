"""Cancellation and deadlines, both sides: the cancel scope of a running call, the user's deadline.

* A :class:`Scope` belongs to one call a server runs (made by ``mesh.server._cancel``): its task
  id, its deadline (monotonic, on this host's clock), whether it was cancelled (``why``), and the
  calls it made (its *children*, ``task -> address``). Cancelling a scope sends ``cancel`` to
  the server of every child, which cancels their own children in turn: the cascade crosses
  servers one hop at a time and needs no parent link on the wire. The running call's thread
  (or coroutine step) finds its scope through ``mesh._core.context.current_scope()``.
* ``with mesh.deadline(s):`` sets a context variable (per thread, per asyncio task). A call made
  inside, or from a method whose call carries a deadline, sends the earlier of the two as *time
  left* (header ``dl``), so clocks of different hosts need not agree.

Nothing here costs anything on a call made outside both: one thread-local and one context
variable read.
"""

from __future__ import annotations

import contextvars
import math
import threading
import time
from typing import Any, Callable

from mesh._core import context, runtime, wire
from mesh._errors import Cancelled

__all__ = [
    "Scope",
    "cancelled",
    "check_cancelled",
    "deadline",
    "deadline_at",
    "outgoing",
    "send_cancel",
    "time_left",
]

_user_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("mesh_deadline", default=None)
_lock = threading.Lock()


def send_cancel(address: str, task: str, why: str = wire.WHY_CANCEL) -> None:
    """Tell ``address`` to cancel ``task`` (one-way, best effort; unknown tasks are ignored there).

    On the data connection, after the call it cancels: it cannot overtake an async call.
    """
    rt = runtime.current(create=False)
    if rt is not None:
        rt.node.send(address, {"op": wire.CANCEL, "task": task, "why": why, "sess": rt.session})


class Scope:
    """The cancel state of one running (or queued) call: its deadline, its reason, its children."""

    __slots__ = ("task", "deadline", "why", "children", "on_cancel")

    def __init__(self, task: str | None, deadline: float | None = None, on_cancel: Callable[[str], Any] | None = None) -> None:
        self.task = task
        self.deadline = deadline  # time.monotonic() of this host
        self.why: str | None = None  # wire.WHY_CANCEL / WHY_DEADLINE once cancelled
        self.children: dict[str, str] = {}  # task -> address of the calls it made, still unanswered
        self.on_cancel = on_cancel  # called once with ``why`` by cancel() (e.g. stop the call, close a stream)

    @property
    def cancelled(self) -> bool:
        if self.why is not None:
            return True
        return self.deadline is not None and time.monotonic() >= self.deadline

    def add_child(self, address: str, task: str) -> None:
        """A call this scope's call made (after it was sent); cancelled at once if the scope is."""
        self.children[task] = address
        why = self.why
        if why is not None and self.children.pop(task, None) is not None:  # cancel() may have swapped first
            send_cancel(address, task, why)

    def drop_child(self, task: str) -> None:
        """That call was answered: nothing left to cancel there."""
        self.children.pop(task, None)

    def cancel(self, why: str = wire.WHY_CANCEL) -> bool:
        """Cancel (once): mark it, cascade to the children, run ``on_cancel``. False if it already was."""
        with _lock:
            if self.why is not None:
                return False
            self.why = why
            kids, self.children = self.children, {}
        for task, address in kids.items():
            send_cancel(address, task, why)
        return self._stopped(why)

    def _stopped(self, why: str) -> bool:
        """What cancelling does besides the cascade (the server's scopes stop their call)."""
        hook = self.on_cancel
        if hook is not None:
            hook(why)
        return True


# -- inside a method ----------------------------------------------------------------------------
def cancelled() -> bool:
    """True once the call this code runs for was cancelled, or its deadline passed.

    Outside a remote method (no call to cancel): ``False``.
    """
    scope = context.current_scope()
    return scope is not None and scope.cancelled


def check_cancelled() -> None:
    """Raise :class:`mesh.Cancelled` if the call this code runs for was cancelled (or its deadline passed).

    The cooperative check of a sync method: call it between steps of long work.
    """
    scope = context.current_scope()
    if scope is not None and scope.cancelled:
        what = "it was cancelled" if scope.why == wire.WHY_CANCEL else "its deadline passed"
        raise Cancelled(f"this call (task {scope.task}) stops: {what}")


def outgoing() -> tuple[Any, float | None]:
    """``(scope, deadline)`` for a call made here: the running call's scope (or None), and
    :func:`deadline_at` (one call on the hot path of every call)."""
    scope = getattr(context._local, "scope", None)
    user = _user_deadline.get()
    if scope is None or scope.deadline is None:
        return scope, user
    return scope, scope.deadline if user is None or scope.deadline < user else user


def deadline_at() -> float | None:
    """The deadline of calls made here (``time.monotonic()``): the earlier of the running call's
    and of the innermost ``mesh.deadline()``; ``None`` without either."""
    user = _user_deadline.get()
    scope = context.current_scope()
    if scope is None or scope.deadline is None:
        return user
    return scope.deadline if user is None or scope.deadline < user else user


def time_left() -> float | None:
    """Seconds left before the deadline of the code running here (0.0 once passed), or ``None``.

    Inside a remote method: the deadline its call carries (or a tighter ``mesh.deadline()``
    inside it); in a client: the innermost ``mesh.deadline()`` block.
    """
    at = deadline_at()
    return None if at is None else max(0.0, at - time.monotonic())


class _NotSeconds(TypeError, ValueError):
    """Not a number of seconds: a ``TypeError``, and a ``ValueError`` as it was before."""


class deadline:
    """``with mesh.deadline(seconds):`` (or ``async with``): calls made inside end by then.

    Every call made inside the block, and every call those calls make on any server, carries
    the deadline (as time left). A call not started by then never starts; one still running
    then is cancelled; reading its future raises :class:`mesh.DeadlineExceeded` at the deadline.
    Nested blocks take the earlier deadline. The clock starts when the block is entered.

    Raises:
        ValueError: ``seconds`` is negative or NaN.
        TypeError: ``seconds`` is not a number (a ``TypeError`` that is also a ``ValueError``).
    """

    __slots__ = ("seconds", "at", "_token")

    def __init__(self, seconds: float) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise _NotSeconds(f"mesh.deadline() takes a number of seconds >= 0, not {type(seconds).__name__} {seconds!r}")
        if math.isnan(seconds) or seconds < 0:
            raise ValueError(f"mesh.deadline() takes a number of seconds >= 0, not {seconds!r}")
        self.seconds = float(seconds)
        self.at: float | None = None
        self._token: Any = None

    def __enter__(self) -> deadline:
        at = time.monotonic() + self.seconds
        outer = deadline_at()
        self.at = at if outer is None or at < outer else outer
        self._token = _user_deadline.set(self.at)
        return self

    def __exit__(self, *exc: Any) -> None:
        token, self._token = self._token, None
        if token is not None:
            _user_deadline.reset(token)

    async def __aenter__(self) -> deadline:
        return self.__enter__()

    async def __aexit__(self, *exc: Any) -> None:
        self.__exit__(*exc)

    def time_left(self) -> float:
        """Seconds left of this block's deadline (0.0 once passed)."""
        return 0.0 if self.at is None else max(0.0, self.at - time.monotonic())

    def __repr__(self) -> str:
        return f"mesh.deadline({self.seconds:g})"
