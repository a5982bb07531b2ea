"""Fork-safe ids for call chains, tasks and holder refs: unique across processes and hosts."""

from __future__ import annotations

import os

__all__ = ["new_chain"]

_prefix = os.urandom(6).hex()
_counter = iter(range(1, 2**63))


def _after_fork() -> None:
    # a forked child must not repeat its parent's task and ref ids
    global _prefix, _counter
    _prefix = os.urandom(6).hex()
    _counter = iter(range(1, 2**63))


os.register_at_fork(after_in_child=_after_fork)


def new_chain() -> str:
    """A fresh id (a call chain, a task, a holder ref), unique across processes."""
    return f"{_prefix}.{next(_counter)}"
