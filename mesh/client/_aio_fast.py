"""The await fast lane: an async call made on a running asyncio loop, and its ``await``, with as
little Python as the threaded sync call's fast lane (``Client.sync_call``) has.

:func:`issue` takes a plain call (``await obj.m.remote(x)``, ``await obj.async_m(x)``) from code
that runs for no call: no call chain, cancel scope, deadline or tracing, not durable, arguments
of plain values only (nothing pickled, so no counted futures). It takes the path the general one
would take, decided before any work is done: the loop's lane as any call from a loop (its
header a template per object and method, :func:`transport.map_prefix`, plus the chain, task and
id; ``mesh.client._on_loop.started`` counts it until its lane future's ``on_end``, so later calls
keep their order; a ``result`` fetch to fall back on once the loop stops; the future made in place,
as ``mesh.client._async_lane.send`` makes it), or, while the object has calls in flight through the
I/O thread (a burst of this loop's calls that the lane handed over: a gather), the I/O thread's
connection behind them, counted as the general path counts them. Both with ``keep`` (the server
holds the result until this future's holders release it). Anything else: :data:`SLOW`.
:func:`checked` is :func:`issue` after its checks: the threaded lane's ``issue``, tried first,
makes the same checks and hands a call on a running loop to it (``_async_lane.on_loop``).

:func:`awaited` is ``__await__`` of every future. For a call on the running loop's lane, not
done yet, it yields a ``transport._lane_waiter.Waiter`` (an asyncio-compatible future of that
loop) which the lane's reader wakes itself (``LaneFuture.wait_on_loop``), resuming the awaiting
Task in the loop turn that read the reply: no done-callback, waker or coroutine in between. Before
that, while the loop has nothing else to do, it waits for the reply in place
(``transport._lane_drive.wait_here``: no Task sleep, no loop turn; ``MESH_AWAIT_HERE=0``: never). An ``ok`` reply
of a plain value (no buffers, not ``big``) is unpacked without the codec and kept as the
future's value (the reply itself is kept as a ``Replied``, as for a call through the I/O
thread). Everything else (an error, a pickled or big value, a deadline, a fall-back, a server
coroutine's wait with its ``blocking()`` hooks, a future not made here) is read by
``mesh.client._aio.value_of``, as before: so an ``await`` returns or raises what ``.result()``
would. Cancelling the awaiting task cancels the remote call (``mesh.client._cancel.abandon``).
"""

from __future__ import annotations

import sys
import threading
import weakref
from functools import partial
from typing import Any

import msgpack

import transport
from mesh._core import context, ids, tracing, wire
from mesh._core.cancel import _user_deadline
import mesh.client._on_loop as _on_loop
from mesh.client._aio import PENDING, value_of
import mesh.client._async_lane as _async_lane
from mesh.client._async_lane import send as _lane_send
from mesh.client._cancel import abandon
from mesh.client._client import _STR_HEADS, SLOW, _plain_body, get_client
from mesh.client._lean import SHORT, Replied, owner_future
from mesh.client._replies import translate
from transport import _lane_registry as _lanes
from transport._lane_drive import wait_here as _wait_here
from transport._future import _PENDING as _NO_REPLY
from transport._lane_future import LaneFuture
from transport._lane_waiter import _DONE

__all__ = ["awaited", "issue"]

_modules = sys.modules
_get_ident = threading.get_ident
_unpackb = msgpack.unpackb
_pack_str, _pack_uint = transport.pack_str, transport.pack_uint
_reading = context.reading_chain
_busy = _on_loop.busy
_refetch = _on_loop._refetch  # (how the lane asks again once its loop stopped: refetch_of's partial)
lean = True  # False: a call behind a burst goes by _via_io as before (A/B measurements)
_SIGNATURE = transport.SIGNATURE
_TEMPLATES_MAX = 4096
_templates: dict[tuple[str, str, str], bytes] = {}  # (session, object, method) -> header prefix
_nothing = weakref.ref(set())  # (a dead reference)
# (node, loop, address, lane) of the last lane used, loop and lane held weakly (a closed loop and its
# lane go as they did); one tuple: loops on several threads replace it whole, a reader never mixes two
_last: list = [(None, _nothing, None, _nothing)]


def issue(proxy: Any, name: str, cls: type, args: tuple, kwargs: dict) -> Any:
    """An async call's future (a ``cls``), sent on the running loop's lane; :data:`SLOW` when the
    call needs the general path (see the module's docstring)."""
    aio = _modules.get("asyncio")
    loop = aio._get_running_loop() if aio is not None else None
    local = context._local
    if (loop is None or not _on_loop.enabled or local.chain is not None or local.scope is not None
            or local.on_block is not None or _reading.get() is not None or _user_deadline.get() is not None
            or (_modules.get("opentelemetry.trace") is not None and tracing.enabled())):
        return SLOW
    return checked(proxy, name, cls, args, kwargs)


def checked(proxy: Any, name: str, cls: type, args: tuple, kwargs: dict) -> Any:
    """:func:`issue` once its context was checked (by ``mesh.client._async_lane.issue``, which tries
    a call first and finds it on a running loop: its tests are :func:`issue`'s)."""
    loop = _modules["asyncio"]._get_running_loop()
    if not _on_loop.enabled:
        return SLOW
    client = get_client()
    object_id, address = proxy._mesh_id, proxy._mesh_address
    node = client.node
    entry = _busy.get(object_id) if _busy else None
    # which path the general one would take (mesh.client._on_loop.issue), decided before any work:
    # the I/O thread's connection behind the object's calls in flight there (a burst of this loop's
    # calls handed to it included), else the loop's lane
    if entry is None and client.peers.busy(object_id):
        via_io = True
    else:
        lane = _lane(node, loop, address)
        if lane is None or (entry is not None and entry[0] is not lane):
            return SLOW
        via_io = False
        if lane.delegated:  # a burst goes through the I/O thread: the calls behind it follow it there
            if entry is None or not lane.bursting():
                return SLOW  # (the lane queues it behind what it still has: the general path)
            via_io = True
    body = _plain_body(args, kwargs)
    if body is None or len(body) > client.peers.lean_max:  # (64 KiB, or a smaller server limit known)
        return SLOW
    if via_io and lean:  # the threaded async lane's send: the same connection, no done-callback per call
        return _lane_send(proxy, name, cls, body)
    session = client.session
    rid = node.next_id()
    # two fresh ids as ids.new_chain makes them (the module's prefix and counter: both renewed at a fork)
    counter, head = ids._counter, ids._prefix
    chain, task = f"{head}.{next(counter)}", f"{head}.{next(counter)}"
    header = {"op": wire.CALL, "obj": object_id, "m": name, "sess": session, "keep": 1, "chain": chain,
              "task": task, "id": rid}  # what a fall-back (or the I/O thread) sends
    if via_io:  # what the general path does there (peers' accounting keeps the order), without its work
        fut = _via_io(client, object_id, address, header, body)
        client.own(address)  # our lease there keeps the result held until we release it (or exit)
        return cls(address, task, fut, pool=proxy._mesh_pool, inst=proxy._mesh_inst)
    key = (session, object_id, name)
    prefix = _templates.get(key)
    if prefix is None:
        if len(_templates) >= _TEMPLATES_MAX:
            _templates.clear()
        prefix = _templates[key] = transport.map_prefix(8, [
            ("op", wire.CALL), ("obj", object_id), ("m", name), ("sess", session), ("keep", 1)]) + b"\xa5chain"
    raw_chain, raw_task = chain.encode(), task.encode()  # (pack_str inlined for the short ids these are)
    if len(raw_task) < 32:  # (the longer of the two)
        packed = b"".join((prefix, _STR_HEADS[len(raw_chain)], raw_chain, b"\xa4task", _STR_HEADS[len(raw_task)],
                           raw_task, b"\xa2id", _pack_uint(rid)))
    else:
        packed = prefix + _pack_str(chain) + b"\xa4task" + _pack_str(task) + b"\xa2id" + _pack_uint(rid)
    fut = LaneFuture(lane, rid, (header, body, ()), partial(_refetch, client, address, task))  # (refetch_of)
    _on_loop.started(lane, object_id, fut)  # counted among the object's calls in flight on the lane
    future, d = owner_future(cls, proxy, address, task, fut)
    try:
        lane.submit(fut, [_SIGNATURE, packed, body])
    except BaseException as exc:
        d["_mesh_ref"] = None  # never sent: not a holder (its finalizer reports nothing)
        _on_loop.not_started(fut)
        raise translate(exc) from None
    client.own(address)  # our lease there keeps the result held until we release it (or exit)
    return future


def _via_io(client: Any, object_id: str, address: str, header: dict, body: bytes) -> Any:
    """Send through the I/O thread, counted among the object's calls in flight there (as
    ``mesh.client._on_loop.issue`` does for the general path)."""
    peers = client.peers
    peers.call_started(object_id)
    try:
        fut = client.node.request(address, header, body)
    except BaseException:
        peers.call_ended(object_id)
        raise
    fut.add_done_callback(partial(_call_ended, peers, object_id))
    return fut


def _call_ended(peers: Any, object_id: str, _fut: Any) -> None:
    peers.call_ended(object_id)


def _lane(node: Any, loop: Any, address: str) -> Any:
    last_node, last_loop, last_address, last_lane = _last[0]
    if last_loop() is loop and last_address == address and last_node is node:
        lane = last_lane()
        if lane is not None and not lane.closed:
            return lane
    try:
        lane = _lanes.lane_for(node, loop, address)
    except Exception:  # noqa: BLE001 - the general path makes it again and says what failed
        return None
    _last[0] = (node, weakref.ref(loop), address, weakref.ref(lane))
    return lane


def awaited(fut: Any) -> Any:
    """``fut.__await__()``: the value, or what ``fut.result()`` raises; never blocks the loop."""
    d = fut.__dict__
    if d["_mesh_value"] is not PENDING:  # read before
        return d["_mesh_value"]
    call = d["_mesh_call"]
    if (type(call) is LaneFuture and d["_mesh_exc"] is None
            and d["_mesh_fetch"] is None and d.get("_mesh_deadline") is None and d.get("_mesh_pooled") is None
            and "_mesh_forward" not in d and context._local.on_block is None):
        if call._value is _NO_REPLY and call._exc is None and not call.fell_back:  # (not call.done(), inline)
            lane = call.lane
            loop = lane.loop_ref()
            aio = _modules["asyncio"]
            if (loop is not None and loop is aio._get_running_loop() and lane.ident == _get_ident() and not lane.closed
                    and not (call.sent and _wait_here(lane, call, loop))):
                waiter = call.wait_on_loop(loop)
                if waiter is not None:
                    waiter._asyncio_future_blocking = True  # (Waiter.__await__, without a generator of its own)
                    try:
                        yield waiter  # the Task sleeps on it; the lane's reader wakes it (or a cancel does)
                        if waiter.state != _DONE:  # (cancelled: raises CancelledError, as Waiter.__await__)
                            waiter.result()
                    except aio.CancelledError:  # the awaiting task was cancelled: so is the remote call
                        if call.waiter is waiter:
                            call.waiter = None
                        abandon(fut)
                        raise
        body = call._value
        if type(body) is bytes and call._exc is None:  # a plain ok reply, kept as its body by the lane
            try:
                value = _unpackb(body, raw=False, strict_map_key=False, ext_hook=_not_plain)
            except Exception:  # noqa: BLE001 - an ext value (a tuple, a pickle...): the codec decides
                value = PENDING
            if value is not PENDING:
                with SHORT:
                    if d["_mesh_value"] is PENDING:
                        d["_mesh_value"] = value
                if d["_mesh_call"] is call:  # keep the body only (what mesh.client._lean.compact does)
                    d["_mesh_call"] = Replied(body)
                return d["_mesh_value"]
    return (yield from value_of(fut).__await__())


def _not_plain(code: int, data: bytes) -> Any:
    raise ValueError("an ext value: decoded by the codec")


_async_lane.on_loop = checked  # the threaded lane's issue hands a call on a running loop straight here
