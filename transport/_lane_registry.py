"""Which lane: one per (node, event loop, endpoint), made on first use (see ``transport._lanes``).

Lanes are keyed by their loop, weakly; a lane holds its loop weakly too. The lanes of a loop
that closed, or of a node that closed, are closed when the next lane is made and when a node
closes (``Node.close`` sweeps). Lanes use a zmq
context of their own (one per process): the node's ``ctx.term()`` never waits for a loop.
"""

from __future__ import annotations

import copy
import os
import threading
import weakref
from typing import Any

import zmq

from transport._errors import NodeClosed
from transport._lane_future import LaneFuture, Refetch
from transport._lanes import Lane

__all__ = ["lane_for", "request", "sweep"]

_by_loop: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loop -> {endpoint: Lane}
_all: weakref.WeakSet = weakref.WeakSet()
_lock = threading.Lock()
_ctx: list = [None, 0]  # the lanes' zmq context, and the pid that made it


def lane_for(node: Any, loop: Any, endpoint: str) -> Lane:
    """The lane of ``loop`` (running on this thread) to ``endpoint``, made on first use."""
    lanes = _by_loop.get(loop)
    if lanes is None:
        lanes = _by_loop.setdefault(loop, {})
    lane = lanes.get(endpoint)
    if lane is None or lane.closed or lane.node is not node:
        sweep()
        lane = lanes[endpoint] = Lane(node, _recipe(node), endpoint, loop)
        with _lock:
            _all.add(lane)
    return lane


def request(node: Any, loop: Any, endpoint: str, header: dict, body: bytes, buffers: list | tuple = (), *,
            refetch: Refetch | None = None, timeout: float | None = None) -> LaneFuture:
    """Send on this loop's lane; the future gets ``(header, body, buffers)`` of the reply, as
    ``Node.request``'s (``header`` holds ``id``). ``refetch``: how to ask for the same reply through
    the I/O thread once the loop no longer runs (None: such a request fails with PeerLost)."""
    if node.closed:
        raise NodeClosed("the mesh node is closed")
    return lane_for(node, loop, endpoint).request(header, body, buffers, refetch, timeout)


def sweep() -> None:
    """Close the lanes whose loop or node has gone (on their loop's thread while it still runs)."""
    with _lock:
        lanes = list(_all)
    for lane in lanes:
        loop = lane.loop_ref()
        if lane.closed or lane.pid != os.getpid():
            continue
        if loop is None or loop.is_closed():
            if lane.drive_lock.acquire(blocking=False):
                try:
                    lane.close()
                finally:
                    lane.drive_lock.release()
        elif lane.node.closed and not lane.pending:
            try:
                loop.call_soon_threadsafe(lane.close)
            except RuntimeError:
                pass


def _recipe(node: Any) -> Any:
    """The node's DealerRecipe on the lanes' own context (made once per process)."""
    if _ctx[0] is None or _ctx[1] != os.getpid():
        ctx = zmq.Context()
        ctx.linger = 0
        _ctx[0], _ctx[1] = ctx, os.getpid()
    recipe = copy.copy(node._recipe)
    recipe.ctx = _ctx[0]
    return recipe
