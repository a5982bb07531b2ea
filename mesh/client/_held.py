"""Creations not sent yet to a server (``mesh._create_many`` keeps them: a batch open for the I/O
thread's next turn, or held while an earlier one to that server is not answered). A call to that
server sends them first (``_proxy._invoke``), so the server sees creations and calls in program order."""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["held", "release", "set_release"]

held: dict[str, list[Any]] = {}  # address -> its batches not sent yet (open or held)
_release: list[Callable[[str], None] | None] = [None]  # mesh._create_many.release_held


def release(address: str) -> None:
    """Send the creations held for ``address`` now (before a call to it)."""
    fn = _release[0]
    if fn is not None:
        fn(address)


def set_release(fn: Callable[[str], None]) -> None:
    _release[0] = fn
