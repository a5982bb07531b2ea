"""A server's event loop run by its I/O thread: what the server adds to ``transport._hosted``.

Hosted (the default for a server's first :class:`~mesh.server._aio.Aio`), a coroutine call is
read, started, run and answered by one thread. That thread is also the one that reads every
request, so two things the loop's own thread never had to care about:

* a step that runs long (a sync ``time.sleep`` in an ``async def``) would hold the sockets: each
  step on the thread owning the I/O loop is covered by the inline calls' watchdog
  (:class:`mesh.server._inline.Watchdog`), which hands the I/O loop to a new thread once the step
  has run for :data:`mesh.server._inline.STALL`; the step finishes, and the loop's thread gets the
  I/O loop back at its next select. Replies sent by a step go through the I/O queue meanwhile
  (``Node.stepping``): a hand-off may come at any point of the step;
* a step that blocks its thread on another mesh task (a sync call, ``.result()``) would wait for
  a reply that thread itself must read: :func:`before_blocking` hands the I/O loop off first, as an
  inline sync call does. An ``await`` frees the thread and hands nothing off.
"""

from __future__ import annotations

import threading
from typing import Any

from mesh._core import context

_get_ident = threading.get_ident

__all__ = ["StepGuard", "before_blocking"]


class StepGuard:
    """``begin()`` / ``end()`` around each step of a hosted loop (see the module's docstring).

    Twice per suspending coroutine call, so both are written out: the I/O loop's owner read from
    the transport loop itself (``Node.io_ident``), its ``stepping`` flag set directly
    (``Node.stepping``), and the watchdog's ``begin`` / ``end`` done here, as
    :class:`~mesh.server._inline.Watchdog` does them (the end under its lock: it never hands off a
    step that has just ended)."""

    __slots__ = ("_runner", "active")

    def __init__(self, runner: Any) -> None:
        self._runner = runner
        self.active = False  # a step is covered now (one hosting thread: a plain flag)

    def begin(self) -> bool:
        """Cover the step now starting on this thread; False if this thread does not own the I/O loop."""
        runner = self._runner
        node = runner.node
        if node is None:
            return False
        io = node._loop
        me = _get_ident()
        if io.ident != me:
            return False
        io.stepping = True  # (Node.stepping(True))
        watchdog = runner.watchdog  # (Watchdog.begin(me))
        watchdog.seq = seq = watchdog.seq + 1
        watchdog.current = (seq, me)
        if watchdog._thread is None:
            watchdog.start()
        self.active = True
        return True

    def end(self) -> None:
        if not self.active:  # ended early (Aio.unguard, before the reply)
            return
        self.active = False
        runner = self._runner
        watchdog = runner.watchdog
        with watchdog.lock:  # (Watchdog.end()) no hand-off after this
            watchdog.current = None
        runner.node._loop.stepping = False  # (Node.stepping(False))


def before_blocking(runner: Any) -> None:
    """A coroutine's step is about to block its thread (not an ``await``): if that thread owns the
    I/O loop (a hosted loop), hand the I/O loop to another thread first."""
    if context.awaited() or not runner.aio.hosted:
        return
    me = threading.get_ident()
    if me != runner.io_ident:
        return
    watchdog = runner.watchdog
    with watchdog.lock:
        watchdog.current = None
        runner._hand_off(me)
