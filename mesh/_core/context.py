"""Per-thread call context: which call chain runs here, and the blocking() hooks.

A server worker that waits on a mesh future (another agent's result, a sync
call to another object) tells its server through :func:`blocking`, so the
server can hand its slot to another task (no pool starvation) and let calls
of the same call chain re-enter the waiting actor (no A->B->A deadlock).

The two sides meet here: ``mesh.server._calls`` sets a worker's context, and the client's
waits (``mesh.client._replies.wait``, the Node's window wait) call :func:`blocking`.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["awaited", "blocking", "current_chain", "current_scope", "reading_chain", "set_context"]

class _Local(threading.local):
    """Per-thread context; the class defaults make a read on a thread that set nothing cheap
    (a miss on a plain ``threading.local`` costs ~0.4 us: every call reads it)."""

    chain: str | None = None
    scope: Any = None
    on_block: Callable[[], None] | None = None
    on_unblock: Callable[[], None] | None = None
    awaited = False  # the wait being announced (blocking()) is an await: it frees the thread


_local = _Local()
# the chain of a stream reading (a for / async for) in code that runs for no call (a client):
# the calls made in the loop's body carry it, so a paused producer lets them in (mesh.client._stream)
_reading: contextvars.ContextVar[str | None] = contextvars.ContextVar("mesh_reading_chain", default=None)
reading_chain = _reading


def current_chain() -> str | None:
    """The call chain this thread runs for, if it is a server worker (or reads a stream)."""
    chain = getattr(_local, "chain", None)
    return chain if chain is not None else _reading.get()


def current_scope() -> Any:
    """The cancel scope (``mesh._core.cancel.Scope``) of the call this thread runs, if any."""
    return getattr(_local, "scope", None)


def set_context(
    chain: str | None, on_block: Callable[[], None] | None, on_unblock: Callable[[], None] | None, scope: Any = None,
) -> None:
    """Set (or clear, with ``None``) this thread's context; used by server workers.

    ``scope``: the running call's cancel scope (its task, deadline, the calls it made).
    """
    _local.chain = chain
    _local.on_block = on_block
    _local.on_unblock = on_unblock
    _local.scope = scope


def awaited() -> bool:
    """True while the ``on_block`` hook runs for an ``await`` (``blocking(awaited=True)``): the
    thread is not held, only the coroutine waits."""
    return _local.awaited


@contextlib.contextmanager
def blocking(awaited: bool = False) -> Iterator[None]:
    """Mark a wait on another mesh task: the server may run other work meanwhile.

    ``awaited``: the wait is an ``await`` in a coroutine (the thread goes on running others),
    not a thread that blocks.
    """
    on_block = getattr(_local, "on_block", None)
    if on_block is None:
        yield
        return
    on_unblock = _local.on_unblock
    if awaited:
        _local.awaited = True
        try:
            on_block()
        finally:
            _local.awaited = False
    else:
        on_block()
    try:
        yield
    finally:
        on_unblock()
