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
    return getattr(_local, "counting", False)


@contextlib.contextmanager
def counted_pickles() -> Iterator[None]:
    """Futures pickled inside become counted holders (see ``mesh._future``)."""
    _local.counting = True
    try:
        yield
    finally:
        _local.counting = False


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
