"""An asyncio event loop run by the I/O thread ("hosted"): sockets and coroutines on one thread.

A server runs its coroutine methods on an asyncio loop. On a thread of its own, every coroutine
call crosses threads twice (I/O thread -> loop -> I/O thread, a wake-up each: ~100 µs apiece on
two busy cores), several times what a no-op call costs otherwise. Hosted, the I/O thread runs
the asyncio loop itself: the loop's selector (:class:`IoSelector`) runs turns of the I/O loop
(:meth:`transport._loop.Loop.turn`), which poll the asyncio loop's descriptors together with
the sockets, and run the handlers, the commands and the timers, until the asyncio loop has
something to do (a turn that serves a sync call costs no asyncio iteration). A request read in a turn
starts its coroutine in the same loop iteration, and the reply is sent by the thread that read
the request.

During a turn the thread has no running asyncio loop (handlers are plain code, as on an I/O
thread that hosts nothing); during the asyncio loop's own callbacks (the coroutines' steps)
:attr:`Loop.stepping` is set by whoever steps them (``mesh.server``), so that a reply sent from a
step goes through the loop's queue instead of the socket, unless the stepper has made sure no
hand-off can come meanwhile.

When a handler or a step must wait or runs long, the I/O loop is handed to a new thread
(:meth:`Loop.hand_off`) as before; the hosting thread then goes on as the asyncio loop's thread
only, its selector polling the asyncio descriptors alone, and asks for the I/O loop back at each
select: the other thread gives it back (at the end of a turn, while the hosting thread is in that
select, under :attr:`Host.lock`) and leaves.

Only one asyncio loop is hosted per I/O loop (:func:`host`); asyncio is imported only here.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import math
import selectors
import threading
import time
from typing import Any, Callable

import zmq

from transport._log import log
from transport._loop import Call, Loop

__all__ = ["Host", "IoSelector", "host"]

_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
_poll = zmq.zmq_poll
_set_running = asyncio.events._set_running_loop
_monotonic = time.monotonic
_Handle, _TimerHandle = asyncio.events.Handle, asyncio.events.TimerHandle
_copy_context = contextvars.copy_context
_heappush = heapq.heappush


def host(io: Loop, setup: Callable[[Any], None] | None = None) -> Host | None:
    """Have ``io``'s thread run a new asyncio loop (any thread): the :class:`Host`, or None if
    ``io`` hosts one already or has stopped. ``setup(loop)`` runs before the loop can run."""
    h = Host(io)
    if setup is not None:
        setup(h.loop)
    with io._wake_lock:
        if io._dead or io._stopped or io.host is not None:
            h.loop.close()
            return None
        io.host = h
    io.submit(Call(_noop))  # the I/O thread starts it at the end of its turn
    return h


class Host:
    """An asyncio loop run by an I/O loop's thread."""

    def __init__(self, io: Loop) -> None:
        self.io = io
        self.lock = threading.Lock()
        self.started = False
        self.ident = 0  # the thread running the asyncio loop (0 until it runs)
        self.thread: threading.Thread | None = None
        self.done = threading.Event()  # set once the asyncio loop has stopped running
        self.waiting = False  # the hosting thread is in a plain select (it does not own the I/O loop)
        self.asked = False  # a give-back is queued on the I/O loop
        self.loop = HostedLoop(IoSelector(self))

    def run(self, me: int) -> None:
        """Run the asyncio loop on I/O thread ``me`` until it stops (called by :meth:`Loop._loop`)."""
        self.ident = me
        self.thread = threading.current_thread()
        self.started = True
        try:
            self.loop.run_forever()
        except BaseException:  # noqa: BLE001 - the I/O loop must go on
            log.exception("the hosted event loop failed")
        finally:
            io = self.io
            with io._wake_lock:
                if io.host is self:
                    io.host = None
            self.done.set()

    # ------------------------------------------------------ the hosting thread
    def select(self, items: list, timeout: float | None) -> list:
        """Poll ``items`` (the asyncio descriptors) for at most ``timeout`` s: a turn of the I/O loop
        if this thread owns it, else a plain poll that asks for it back."""
        ms = None if timeout is None else (0 if timeout <= 0 else math.ceil(timeout * 1000))
        io, me = self.io, self.ident
        if io.ident == me:
            loop = self.loop
            ready = loop._ready  # the asyncio loop's callbacks to run (a deque; asyncio's own)
            _set_running(None)  # handlers run as on any I/O thread
            try:
                # Turns until the asyncio loop has something to do: its descriptors are ready, a
                # turn gave it a callback (a coroutine call started), its next timer is due; or
                # the thread no longer owns the I/O loop, or it stops. A turn that serves a sync
                # call then costs no asyncio iteration (_run_once and this select around it).
                scheduled = loop._scheduled  # its timers (a heap): one added by a turn ends the turns too
                timers = len(scheduled)
                events = io.turn(me, items, ms)
                if not events and not ready and ms != 0 and not loop._stopping and len(scheduled) == timers:
                    end = None if ms is None else _monotonic() + timeout  # (the loop's clock is monotonic)
                    while io.ident == me and not io._stopped:
                        if end is not None:
                            left = end - _monotonic()
                            if left <= 0:
                                break
                            ms = math.ceil(left * 1000)
                        events = io.turn(me, items, ms)
                        if events or ready or loop._stopping or len(scheduled) != timers:
                            break
            finally:
                _set_running(loop)
            if io._stopped and io.ident == me:  # the I/O loop stops: so does the loop it hosts
                loop.stop()
            return events
        with self.lock:
            self.waiting = True
            ask = not self.asked and not io._dead
            self.asked = self.asked or ask
        try:
            if ask:
                io.submit(Call(self._give_back))
            return _poll(items, -1 if ms is None else ms)
        finally:
            with self.lock:
                self.waiting = False

    # ---------------------------------------------- the thread owning the I/O loop
    def _give_back(self) -> None:
        io = self.io
        me = threading.get_ident()
        with self.lock:
            self.asked = False
            if not self.waiting or self.done.is_set():  # busy in a step: it asks again at its next select
                return
            with io._wake_lock:
                if io._dead or io.ident != me:
                    return
                io.ident = self.ident  # this thread leaves the loop once this command returns
                io.thread = self.thread  # type: ignore[assignment]
        try:
            self.loop.call_soon_threadsafe(_noop)  # wake the hosting thread: its next select is a turn
        except RuntimeError:  # pragma: no cover - closed meanwhile
            pass


def _noop() -> None:
    pass


class IoSelector(selectors._BaseSelectorImpl):  # type: ignore[name-defined,misc]
    """The selector of a hosted asyncio loop: :meth:`Host.select` over the registered descriptors."""

    def __init__(self, h: Host) -> None:
        super().__init__()
        self._host = h
        self._items: list | None = []

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = super().register(fileobj, events, data)
        self._items = None
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        key = super().unregister(fileobj)
        self._items = None
        return key

    def select(self, timeout: float | None = None) -> list:
        items = self._items
        if items is None:
            items = self._items = [
                (key.fd, (zmq.POLLIN if key.events & _READ else 0) | (zmq.POLLOUT if key.events & _WRITE else 0))
                for key in self._fd_to_key.values()
            ]
        ready = []
        keys = self._fd_to_key
        for fd, mask in self._host.select(items, timeout):
            key = keys.get(fd)
            if key is None:
                continue
            events = 0
            if mask & ~zmq.POLLIN:  # out, or an error: as selectors.PollSelector reports them
                events |= _WRITE
            if mask & ~zmq.POLLOUT:
                events |= _READ
            ready.append((key, events & key.events))
        return ready


class _Timer(_TimerHandle):
    """A timer of :class:`HostedLoop`: compared by time alone (the heap holds only timers)."""

    __slots__ = ()

    def __lt__(self, other: Any) -> bool:
        return self._when < other._when


_new_handle, _new_timer = _Handle.__new__, _Timer.__new__


class HostedLoop(asyncio.SelectorEventLoop):  # type: ignore[misc,valid-type]
    """The hosted asyncio loop, with asyncio's scheduling made lean (not in debug mode).

    Every coroutine call that suspends schedules a few callbacks: its task's first step, the
    timer of an ``asyncio.sleep``, the task's wake-up when a future completes. asyncio's own
    :meth:`call_soon` / :meth:`call_at` make each through three or four Python frames (the
    debug checks, ``_call_soon``, ``Handle.__init__`` asking ``get_debug()``); here it is one,
    with the same handle fields as asyncio's non-debug path. In debug mode, or once closed (for
    asyncio's error), asyncio's own code runs.
    """

    def call_soon(self, callback: Any, *args: Any, context: Any = None) -> Any:
        if self._debug or self._closed:
            return super().call_soon(callback, *args, context=context)
        h = _new_handle(_Handle)
        h._context = _copy_context() if context is None else context
        h._loop = self
        h._callback = callback
        h._args = args
        h._cancelled = False
        h._repr = None
        h._source_traceback = None
        self._ready.append(h)
        return h

    def call_at(self, when: Any, callback: Any, *args: Any, context: Any = None) -> Any:
        if self._debug or self._closed or when is None:
            return super().call_at(when, callback, *args, context=context)
        t = _new_timer(_Timer)
        t._context = _copy_context() if context is None else context
        t._loop = self
        t._callback = callback
        t._args = args
        t._cancelled = False
        t._repr = None
        t._source_traceback = None
        t._when = when
        _heappush(self._scheduled, t)
        t._scheduled = True
        return t

    def call_later(self, delay: Any, callback: Any, *args: Any, context: Any = None) -> Any:
        if delay is None:
            raise TypeError("delay must not be None")
        return self.call_at(_monotonic() + delay, callback, *args, context=context)
