"""A lane driven by its loop's thread while that loop does not run its callbacks (``transport._lanes``),
and an await that waits for its reply in place (:func:`wait_here`).

The loop's own thread blocks in :meth:`LaneFuture.result` (a coroutine reading a future with
``.result()``, or the thread after ``asyncio.run`` returned): it polls the lane's socket and its
monitor itself, as :class:`transport._direct.Direct` does, until the reply it waits for is here.
"""

from __future__ import annotations

import os
import select
import selectors
import time
from typing import Any, Callable

import zmq

from transport._errors import FutureTimeout, NodeClosed
import transport._lane_waiter as _waiter
from transport._future import _PENDING
from transport._lane_future import SLICE

__all__ = ["drive", "wait_here"]

HERE_MAX = 0.005  # s: the longest an await waits in place (then the loop's selector waits)
# MESH_AWAIT_HERE=0: an await always sleeps on its waiter, the loop's selector waits (as before; A/B)
here = os.environ.get("MESH_AWAIT_HERE", "1") != "0"
_poll = zmq.zmq_poll
_Poll = select.poll
_POLLIN = zmq.POLLIN
_Epoll = getattr(selectors, "EpollSelector", None)


def drive(lane: Any, done: Callable[[], bool], end: float | None) -> None:
    """Poll ``lane``'s socket on this (its loop's) thread until ``done()``, or raise FutureTimeout at ``end``."""
    with lane.drive_lock:
        if lane.poller is None:
            lane.poller = zmq.Poller()
            lane.poller.register(lane.sock, zmq.POLLIN)
            lane.poller.register(lane.mon, zmq.POLLIN)
        while not done():
            if lane.closed:
                return
            if lane.handoffs:
                lane.adopt_all()
            if lane.outbox:
                lane.flush()
            if lane.node.closed:
                lane.fail(NodeClosed("the mesh node was closed"))
                return
            wait = SLICE if end is None else min(SLICE, end - time.monotonic())
            if wait <= 0:
                raise FutureTimeout("no reply within the timeout")
            if lane.delegated:  # replies of a burst come through the I/O thread, not this socket
                wait = min(wait, 0.001)
            events = dict(lane.poller.poll(max(1, int(wait * 1000))))
            lane.readable()  # the socket before the monitor: a reply that came before a disconnect
            if lane.mon in events:
                lane.on_monitor()
            if not lane.up and lane.pending and time.monotonic() > lane._up_by():
                lane._connect_expired()


def wait_here(lane: Any, fut: Any, loop: Any) -> bool:
    """Wait for ``fut``'s reply on its loop's thread, inside the awaiting coroutine, while that loop
    has nothing else to do: True once the reply was read (``fut`` done).

    The wait is one ``poll`` of the socket's FD (armed: ``EVENTS`` was read since the last ``recv``,
    :attr:`Lane.polled`, or is read here first) and of the loop's own epoll descriptor, which is
    readable as soon as anything the loop's selector watches is (another reader, a
    ``call_soon_threadsafe`` from a thread, a signal's wake-up fd): the loop is never kept from
    anything it would have done. Only on an epoll selector loop with no callback ready, never past
    the loop's next timer, at most :data:`HERE_MAX`, not in debug mode, not for a task with a cancel
    to deliver (it gets it at this await, as before). Anything else, or no reply by then: False, and
    the await sleeps on its waiter as before. This saves the loop's turn per reply (the selector's
    Python, the handle, the Task's sleep and wake-up): ~7% of the client's CPU per await, ~3% of its
    round trip (NOTES-aiolat4.md)."""
    if not here or _Epoll is None:
        return False
    selector = getattr(loop, "_selector", None)
    ready = getattr(loop, "_ready", None)
    if ready or ready is None or type(selector) is not _Epoll or loop._debug:
        return False
    if lane.outbox or lane.handoffs or lane.delegated or not lane.up or lane.closed:
        return False
    task = _waiter._current_task(loop)
    if task is not None and getattr(task, "_must_cancel", True):  # a cancel to deliver at its next suspension
        return False
    wait = HERE_MAX
    timers = loop._scheduled
    if timers:
        wait = min(wait, timers[0]._when - loop.time())
    ms = int(wait * 1000)
    if ms <= 0:
        return False
    if not lane.polled:  # EVENTS not read since the last recv: the FD's edge may be taken already
        if _poll(lane.poll_in, 0):
            lane.readable()
            if fut.done():
                return True
        lane.polled = True
    waits = lane.waits
    if waits is None:
        waits = lane.waits = _Poll()
        waits.register(lane.sock.FD, _POLLIN)
        waits.register(selector.fileno(), _POLLIN)  # anything else the loop waits for
    waits.poll(ms)
    lane.readable()  # (reads until EVENTS says nothing is left: a wake-up with nothing is fine)
    return fut._value is not _PENDING or fut._exc is not None  # (fut.done(), inline)
