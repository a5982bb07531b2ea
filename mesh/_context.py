"""Per-thread execution context: which call chain runs here, and blocking hooks.

A server worker that waits on a mesh future (another agent's result, a sync
call to another object) tells its server through :func:`blocking`, so the
server can hand its slot to another task (no pool starvation) and let calls
of the same call chain re-enter the waiting actor (no A->B->A deadlock).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator

__all__ = ["blocking", "counted_pickles", "counting", "current_chain", "new_chain", "set_context"]

_local = threading.local()
_prefix = os.urandom(6).hex()
_counter = iter(range(1, 2**63))


def _after_fork() -> None:
    # a forked child must not repeat its parent's task and ref ids
    global _prefix, _counter
    _prefix = os.urandom(6).hex()
    _counter = iter(range(1, 2**63))


os.register_at_fork(after_in_child=_after_fork)


def new_chain() -> str:
    """A fresh call-chain id (unique across processes)."""
    return f"{_prefix}.{next(_counter)}"


def current_chain() -> str | None:
    """The call chain this thread runs for, if it is a server worker."""
    return getattr(_local, "chain", None)


def set_context(chain: str | None, on_block: Callable[[], None] | None, on_unblock: Callable[[], None] | None) -> None:
    """Set (or clear, with ``None``) this thread's context; used by server workers."""
    _local.chain = chain
    _local.on_block = on_block
    _local.on_unblock = on_unblock


def counting() -> bool:
    """True while this thread encodes the arguments of a call (decoded exactly once)."""
    return getattr(_local, "counting", None) is not None


@contextlib.contextmanager
def counted_pickles() -> Iterator[list]:
    """Futures pickled inside become counted holders (see ``mesh._future``).

    Yields the list of ``(holder, ref)`` made, so that a send that fails can take them back.
    """
    made: list = []
    _local.counting = made
    try:
        yield made
    finally:
        _local.counting = None


def note_counted(holder: object, ref: str) -> None:
    """Record a counted ref made under :func:`counted_pickles` (for taking it back)."""
    made = getattr(_local, "counting", None)
    if made is not None:
        made.append((holder, ref))


@contextlib.contextmanager
def blocking() -> Iterator[None]:
    """Mark a wait on another mesh task: the server may run other work meanwhile."""
    on_block = getattr(_local, "on_block", None)
    if on_block is None:
        yield
        return
    on_unblock = _local.on_unblock
    on_block()
    try:
        yield
    finally:
        on_unblock()
