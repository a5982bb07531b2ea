"""A lane driven by its loop's thread while that loop does not run its callbacks (``transport._lanes``).

The loop's own thread blocks in :meth:`LaneFuture.result` (a coroutine reading a future with
``.result()``, or the thread after ``asyncio.run`` returned): it polls the lane's socket and its
monitor itself, as :class:`transport._direct.Direct` does, until the reply it waits for is here.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import zmq

from transport._errors import FutureTimeout, NodeClosed
from transport._lane_future import SLICE

__all__ = ["drive"]


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
