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
import operator
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
_ceil = math.ceil


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
    """A timer of :class:`HostedLoop`: compared by time alone (the heap holds only timers), and
    kept in the bucket of its millisecond (``_bucket``) until it runs or is cancelled."""

    __slots__ = ("_bucket",)

    def __lt__(self, other: Any) -> bool:
        return self._when < other._when

    def cancel(self) -> None:
        if self._cancelled:
            return
        bucket = self._bucket
        if bucket is not None:  # out of its bucket; an empty bucket's heap entry goes too
            self._bucket = None
            bucket.pop(id(self), None)  # (absent: its bucket is running, see HostedLoop._fire)
            buckets = self._loop._buckets
            if not bucket and buckets.get(bucket.key) is bucket:
                del buckets[bucket.key]
                bucket.timer.cancel()
        elif self._scheduled:  # in the heap itself (a bucket's entry): asyncio's count, for its clean-up
            self._loop._timer_cancelled_count += 1
        self._cancelled = True
        if self._loop._debug:
            self._repr = repr(self)
        self._callback = None
        self._args = None


class _Bucket(dict):
    """The timers due within one millisecond (``id(timer) -> timer``) and their one heap entry."""

    __slots__ = ("key", "timer")


_new_handle, _new_timer = _Handle.__new__, _Timer.__new__
_wake_sleeper = asyncio.futures._set_result_unless_cancelled  # asyncio.sleep's timer callback
_when_of = operator.attrgetter("_when")


class HostedLoop(asyncio.SelectorEventLoop):  # type: ignore[misc,valid-type]
    """The hosted asyncio loop, with asyncio's scheduling made lean (not in debug mode).

    Every coroutine call that suspends schedules a few callbacks: its task's first step, the
    timer of an ``asyncio.sleep``, the task's wake-up when a future completes. asyncio's own
    :meth:`call_soon` / :meth:`call_at` make each through three or four Python frames (the
    debug checks, ``_call_soon``, ``Handle.__init__`` asking ``get_debug()``); here it is one,
    with the same handle fields as asyncio's non-debug path.

    Timers are kept by the millisecond they fall in (rounded up): one heap entry per
    millisecond, not one per timer, and that entry runs the bucket's timers in the order of
    their times. 100,000 coroutines sleeping 0.5-2 s make ~70 timers per millisecond; asyncio
    pushes and pops each through a heap of 100,000 (~17 Python comparisons each way). A timer
    runs at most 1 ms after its time (this loop's select already wakes by whole milliseconds),
    never before it; ``when()`` is the time asked for. In debug mode, or once closed (for
    asyncio's error), asyncio's own code runs.
    """

    def __init__(self, selector: Any = None) -> None:
        super().__init__(selector)
        self._buckets: dict[int, _Bucket] = {}  # millisecond (ceil(when * 1000)) -> its timers

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
        t = self._timer(when, callback, args, context)
        key = _ceil(when * 1000)
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = _Bucket()
            bucket.key = key
            bucket.timer = entry = self._timer(key / 1000, self._fire, (bucket,), None)
            _heappush(self._scheduled, entry)
            entry._scheduled = True
        bucket[id(t)] = t
        t._bucket = bucket
        return t

    def call_later(self, delay: Any, callback: Any, *args: Any, context: Any = None) -> Any:
        if delay is None:
            raise TypeError("delay must not be None")
        return self.call_at(_monotonic() + delay, callback, *args, context=context)

    def close(self) -> None:
        super().close()
        self._buckets.clear()

    def _timer(self, when: float, callback: Any, args: tuple, context: Any) -> _Timer:
        t = _new_timer(_Timer)
        if context is None and callback is _wake_sleeper and len(args) == 2:
            t._context = None  # asyncio.sleep's: reads no context variable, run with none (_fire), no copy made
        else:
            t._context = _copy_context() if context is None else context
        t._loop = self
        t._callback = callback
        t._args = args
        t._cancelled = False
        t._repr = None
        t._source_traceback = None
        t._when = when
        t._scheduled = False
        t._bucket = None
        return t

    def _fire(self, bucket: _Bucket) -> None:
        """A bucket's millisecond came: run its timers, in the order of their times."""
        if self._buckets.get(bucket.key) is bucket:
            del self._buckets[bucket.key]
        timers = list(bucket.values())
        bucket.clear()
        if len(timers) > 1:
            timers.sort(key=_when_of)  # (stable: timers of one time run in the order they were made)
        for i, t in enumerate(timers):
            t._bucket = None
            if t._cancelled:  # by a timer that ran before it
                continue
            try:
                if t._context is None:  # an asyncio.sleep's: _set_result_unless_cancelled, inline
                    fut, result = t._args
                    if not fut.cancelled():
                        fut.set_result(result)
                else:
                    t._run()  # (asyncio's Handle._run: an exception goes to the loop's handler)
            except (SystemExit, KeyboardInterrupt):  # the rest still run, later
                rest = timers[i + 1:]
                for r in rest:
                    r._bucket = None
                    if r._context is None:
                        r._context = _copy_context()
                self._ready.extend(rest)
                raise
            except BaseException as exc:  # noqa: BLE001 - (only the inline case: _run catches its own)
                self.call_exception_handler({"message": f"Exception in callback {t._callback!r}",
                                             "exception": exc, "handle": t})
