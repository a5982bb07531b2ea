"""Fork-safe ids for call chains, tasks and holder refs: unique across processes and hosts."""

from __future__ import annotations

import os

__all__ = ["new_chain", "uuid4_hex"]

_prefix = os.urandom(6).hex()
_counter = iter(range(1, 2**63))


def _after_fork() -> None:
    # a forked child must not repeat its parent's task and ref ids
    global _prefix, _counter
    _prefix = os.urandom(6).hex()
    _counter = iter(range(1, 2**63))


os.register_at_fork(after_in_child=_after_fork)


def uuid4_hex() -> str:
    """What ``uuid.uuid4().hex`` gives (32 hex digits, version 4), without importing ``uuid`` and ``platform``."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    return b.hex()


def new_chain() -> str:
    """A fresh id (a call chain, a task, a holder ref), unique across processes."""
    return f"{_prefix}.{next(_counter)}"
