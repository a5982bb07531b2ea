"""The ``blocking()`` hooks of an inline call that runs on an I/O thread (the fast lanes' own)."""

from __future__ import annotations

from typing import Any

__all__ = ["_Hooks"]


class _Hooks:
    """The ``blocking()`` hooks of the inline call running on an I/O thread (as :meth:`CallRunner._run_one`'s).

    One is kept by the lane and reused call after call; a call that is still running when the
    next one starts (its thread handed the I/O loop off) keeps its own, and the lane makes another.
    """

    __slots__ = ("calls", "actor", "chain", "ident", "waited", "busy", "on_block", "on_unblock")

    def __init__(self, calls: Any) -> None:
        self.calls = calls
        self.actor: Any = None
        self.chain: Any = None
        self.ident = 0
        self.waited = False
        self.busy = False
        self.on_block = self._on_block  # bound once: the context holds these, not new closures per call
        self.on_unblock = self._on_unblock

    def _on_block(self) -> None:
        self.waited = True
        calls, actor = self.calls, self.actor
        watchdog = calls.watchdog
        with watchdog.lock:
            if watchdog.current is not None:
                watchdog.current = None
                calls._hand_off(self.ident)
        for c in actor.block(self.chain):
            calls._submit(actor, c)

    def _on_unblock(self) -> None:
        self.actor.unblock(self.chain)
