"""Calls issued on a running asyncio loop go on that loop's own socket (``transport._lanes``).

An async call made by a coroutine (``await obj.method(x)``, ``obj.m.remote(x)``, AutoGen's
runtime sending) is sent by the loop's thread on a DEALER the loop owns, and its reply is read
by the loop itself: no hop through the I/O thread either way. Not for calls made inside a
server's running call (they are children of a call: the server's loop waits differently), to a
durable object (it follows its object through the I/O thread's recovery) or for streams.

One caller's order to one object is kept across the paths (calls on two sockets may be
reordered by the server's fair queueing):

* an object with async calls in flight on the I/O thread's connection: a call from a loop goes
  there too, behind them (as before);
* an object with calls in flight on a loop's lane: a call from that loop's thread, sync ones
  included, goes on the lane too (a sync call then drives the lane until its reply, as a sync call
  blocks anyway); a call from any other thread waits until they are answered (or until that loop
  no longer runs: its calls then finish through the I/O thread, see ``transport._lanes``).

Once the loop stopped, a future it made is read through the I/O thread: a call that was sent is
asked again with a ``result`` fetch by task id (async calls are kept by the server until their
holders release them), one that never left is sent there instead.
"""

from __future__ import annotations

import sys
import threading
import time
from functools import partial
from typing import Any

from mesh._core import wire
from mesh._core.context import current_chain
from mesh.client._replies import decode_reply, translate, wait
from transport import _lane_registry as _lanes

__all__ = ["NOT_ROUTED", "busy", "call_in_order", "issue", "not_started", "on_lane", "refetch_of", "started", "sync_call"]

enabled = True  # False: calls from loops take the I/O thread as before (A/B measurements, a way out)
NOT_ROUTED = object()  # sync_call: not a lane's business, take the usual path

_busy: dict[str, list] = {}  # object id -> [lane, calls in flight on it]
busy = _busy  # non-empty: some object has calls in flight on a lane
_cond = threading.Lock()


def _running_loop() -> Any:
    aio = sys.modules.get("asyncio")
    return aio._get_running_loop() if aio is not None else None


def issue(client: Any, object_id: str, address: str, header: dict, value: Any, eligible: bool) -> Any:
    """Send an async call; the transport future of its reply (accounted per object, both paths)."""
    loop = _running_loop()
    lane = _route(object_id, loop) if _busy else None
    if lane is not None and loop is not None and lane.loop_ref() is loop and lane.bursting():
        # the I/O thread sends a burst of this lane's calls: behind it, on the same connection (in
        # order), with no lane future in between (the lane would hand this call over too)
        lane, eligible = None, False
    if (lane is None and eligible and enabled and loop is not None and current_chain() is None
            and not client.peers.busy(object_id)):
        try:
            lane = _lanes.lane_for(client.node, loop, address)
        except BaseException as exc:
            raise translate(exc) from None
    if lane is not None:
        return _on_lane(client, lane, loop, object_id, address, header, value, keep=True)
    peers = client.peers
    peers.call_started(object_id)
    try:
        fut = client.request(address, header, value)
    except BaseException:
        peers.call_ended(object_id)
        raise
    fut.add_done_callback(lambda f: peers.call_ended(object_id))
    return fut


def sync_call(client: Any, object_id: str, address: str, header: dict, value: Any, timeout: float | None) -> Any:
    """A sync call to an object with calls in flight on a lane: on that lane, behind them (the decoded
    value; from the loop's thread it drives the lane itself), or :data:`NOT_ROUTED`."""
    loop = _running_loop()
    lane = _route(object_id, loop)
    if lane is None:
        return NOT_ROUTED
    fut = _on_lane(client, lane, loop, object_id, address, header, value, keep=False, timeout=timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    return decode_reply(wait(fut, deadline, address), address)


def call_in_order(client: Any, object_id: str, address: str, header: dict, value: Any, timeout: float | None) -> Any:
    """A sync call, on the path that keeps it behind this caller's calls in flight to the object: a
    loop's lane, else the calling thread's own socket when nothing is in flight (the fast path), else
    the I/O thread's connection, behind the async calls there. The decoded value."""
    if _busy:
        got = sync_call(client, object_id, address, header, value, timeout)
        if got is not NOT_ROUTED:
            return got
    if not client.peers.busy(object_id):
        return client.call(address, header, value, timeout=timeout)
    fut = client.request(address, header, value, timeout=timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    return decode_reply(wait(fut, deadline, address), address)


def _route(object_id: str, loop: Any) -> Any:
    """The lane a call to ``object_id`` must take to stay behind its calls in flight, if any."""
    entry = _busy.get(object_id)
    if entry is None:
        return None
    lane = entry[0]
    if lane.ident == threading.get_ident():
        if lane.loop_ref() is loop and loop is not None:
            return lane  # the loop that sent them
        # its thread, after that loop stopped (or inside another loop): read them to the end here
        lane.drive(lambda e=entry: _busy.get(object_id) is not e, None)
        return None
    return lane if lane.driven() else None  # handed to that loop; nobody drives it: the usual path


def _on_lane(client: Any, lane: Any, loop: Any, object_id: str, address: str, header: dict, value: Any, *,
             keep: bool, timeout: float | None = None) -> Any:
    body, buffers = client._prepare(address, header, value)
    refetch = refetch_of(client, address, header["task"]) if keep else None
    return on_lane(lane, loop, object_id, header, body, buffers, refetch, timeout)


def on_lane(lane: Any, loop: Any, object_id: str, header: dict, body: bytes, buffers: list | tuple, refetch: Any,
            timeout: float | None = None, packed: bytes | None = None) -> Any:
    """Send an encoded call on ``lane``, counted among the object's calls in flight there until its
    reply (``packed``: the header's bytes, made by the caller)."""
    with _cond:
        entry = _busy.get(object_id)
        if entry is None or entry[0] is not lane:
            entry = _busy[object_id] = [lane, 0]
        entry[1] += 1
    try:
        if loop is not None and lane.loop_ref() is loop:
            fut = lane.request(header, body, buffers, refetch, timeout, packed)
        else:
            fut = lane.request_threadsafe(header, body, buffers, refetch, timeout)
    except BaseException as exc:
        _ended(object_id, lane)
        raise translate(exc) from None
    fut.add_done_callback(partial(_done, object_id, lane))
    return fut


def started(lane: Any, object_id: str, fut: Any) -> None:
    """``fut`` (a lane future, about to be submitted on ``lane``) counts among the object's calls in
    flight there until it is done (``on_end``: no done-callback per call), as :func:`on_lane` counts."""
    with _cond:
        entry = _busy.get(object_id)
        if entry is None or entry[0] is not lane:
            entry = _busy[object_id] = [lane, 0]
        entry[1] += 1
    fut.on_end = (_ended, object_id, lane)


def not_started(fut: Any) -> None:
    """``fut`` counted by :func:`started` was not submitted (the submit raised): it no longer counts."""
    end, fut.on_end = fut.on_end, None
    if end is not None:
        end[0](end[1], end[2])


def refetch_of(client: Any, address: str, task: str) -> Any:
    """How a lane asks for a kept call's reply again through the I/O thread (its loop stopped)."""
    return partial(_refetch, client, address, task)


def _refetch(client: Any, address: str, task: str) -> Any:
    return client.request(address, {"op": wire.RESULT, "task": task}, None)


def _done(object_id: str, lane: Any, _fut: Any) -> None:
    _ended(object_id, lane)


def _ended(object_id: str, lane: Any) -> None:
    with _cond:
        entry = _busy.get(object_id)
        if entry is not None and entry[0] is lane:
            entry[1] -= 1
            if entry[1] <= 0:
                del _busy[object_id]
