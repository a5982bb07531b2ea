"""The threaded async lane: a plain ``@async_func`` / ``.remote()`` call issued from a thread that
runs no asyncio loop, with as little Python per call as the sync fast lane (``Client.sync_call``).

:func:`issue` takes a call from code that runs for no call: no call chain, cancel scope,
``blocking()`` hooks, stream reading, deadline or tracing; not durable (the caller checks); no
call of this process in flight to the object on an event loop's lane; arguments of plain values
only (nothing pickled, so no counted futures; what :func:`transport.encode` would make of them).
Anything else: :data:`SLOW`, the general path (``mesh.client._proxy._invoke``), which sends the
same request.

What it saves against the general path, per call:

* the header is a template per (session, object, method) (:func:`transport.map_prefix`) plus the
  chain, the task and the id: no header dict, no ``packb`` of a map;
* the transport future is a :class:`LaneReply`: it counts the call among the object's calls in
  flight (``PeerBook``: a later sync call goes behind it) and keeps only the body of a plain
  ``ok`` reply, both without a done-callback, closure, ``functools.partial`` or weak reference;
* the future (``AsyncResult`` / ``Placeholder``) is made without ``__init__`` (its fields stored
  in ``_mesh_init``'s order, so that the instance dicts share their keys) or a done-callback.

The request goes to the I/O thread as any async call does (``Node.request_frames``), so it is
batched with what queues up behind it (protocol 1.4), keeps its window slot, and fails as before
(``PeerUnavailable`` unsent, ``PeerLost`` sent). Reading it is the general read
(``AsyncResult.result``), with a shortcut for a plain value (:func:`read_plain`).
"""

from __future__ import annotations

import sys
from typing import Any

import msgpack

import transport
from mesh._core import context, ids, tracing, wire
from mesh._core.cancel import _user_deadline
import mesh.client._on_loop as _on_loop
import mesh.client._client as _clients
from mesh.client._client import SLOW, _plain_body, get_client
from mesh.client._peers import LEASE_INTERVAL
from mesh.client._lean import OK_HEADER as _OK_HEADER, Replied, owner_future

__all__ = ["LaneReply", "issue", "read_plain", "send"]

_modules = sys.modules
_local = context._local
_reading = context.reading_chain
_busy = _on_loop.busy
_SIGNATURE = transport.SIGNATURE
_pack_uint = transport.pack_uint
_unpackb = msgpack.unpackb
_OK = wire.OK
_NO_BUFFERS: tuple = ()
_future_complete = transport.ReplyFuture._complete
_ENDED: Any = object()  # a LaneReply's _peers once it completed
_STR_HEADS = [bytes((0xA0 | n,)) for n in range(32)]  # msgpack fixstr headers
_TASK_KEY = b"\xa4task"
_ID_KEY = b"\xa2id"
_ID_UINT32 = b"\xa2id\xce"
_new = object.__new__
_REPLY_PENDING = transport.ReplyFuture()._value  # a ReplyFuture's "no value yet"
_TEMPLATES_MAX = 4096
_LEASE_EVERY = LEASE_INTERVAL  # PeerBook.own's renewal period with no lease_ttl
_templates: dict[tuple[str, str, str], bytes] = {}  # (session, object, method) -> header prefix
_PENDING: Any = None  # mesh.client._aio.PENDING, set by install()
# a call on a running loop, its context checked as above: mesh.client._aio_fast.checked (hook, helper aio3)
on_loop: Any = None


class LaneReply(transport.PendingReply):
    """The transport future of a lane call, its own request record on the I/O thread: done, it leaves the object's calls in flight, and of a
    plain ``ok`` reply (no buffers, not ``big``) it keeps the body alone (the reply's header dict
    and frame list go; ``result()`` gives ``(OK_HEADER, body, ())``): what
    ``mesh.client._lean.compact`` does with a done-callback and a ``Replied``."""

    __slots__ = ("_peers", "_obj", "_owner")  # (and PendingReply's, filled in by Node.request_frames)

    def __init__(self, peers: Any, obj: str) -> None:
        transport.ReplyFuture.__init__(self)
        self._peers = peers
        self._obj = obj
        self._owner: dict | None = None  # the future's __dict__ (until the reply: then a Replied stands in)

    def set_result(self, value: Any) -> None:
        header, body, buffers = value
        if buffers or type(body) is not bytes or header.get("op") != _OK or header.get("big"):
            self._owner = None
            self._complete(value, None)
            return
        self._complete(body, None)  # kept alone: result() makes the reply of it
        d, self._owner = self._owner, None
        if d is not None and d.get("_mesh_call") is self:  # atomic under the GIL (as _lean.compact)
            d["_mesh_call"] = Replied(body)  # the future keeps the body alone (this future goes)

    def reply(self, header: dict, body: Any) -> None:
        """:meth:`set_result` of a reply without buffer frames, from a batch (I/O thread):
        ``transport._peer.deliver_batch`` calls it instead of making the ``(header, body, [])``."""
        if type(body) is not bytes or header.get("op") != _OK or header.get("big"):
            if not self.done():
                self.set_result((header, body, []))
            return
        # set_result's plain ok and _complete, inlined (done() tested once): _peers is _ENDED once
        # done or being completed
        peers = self._peers
        if peers is _ENDED:
            return
        self._peers = _ENDED
        if peers is not None:  # (before the waiters wake: a sync call they make next goes direct)
            peers.lane_ended(self._obj)
        _future_complete(self, body, None)  # kept alone: result() makes the reply of it
        d, self._owner = self._owner, None
        if d is not None and d.get("_mesh_call") is self:
            replied = _new(Replied)  # (Replied(body), without its __init__'s call)
            replied.body = body
            d["_mesh_call"] = replied

    def set_exception(self, exc: BaseException) -> None:
        self._owner = None
        self._complete(None, exc)

    def result(self, timeout: float | None = None) -> Any:
        value = transport.ReplyFuture.result(self, timeout)
        return (_OK_HEADER, value, _NO_BUFFERS) if type(value) is bytes else value

    def _complete(self, value: Any, exc: BaseException | None) -> None:
        peers = self._peers
        if peers is _ENDED:  # (set here only: done already, or being completed)
            return
        self._peers = _ENDED
        if peers is not None:  # (before the waiters wake: a sync call they make next goes direct)
            peers.lane_ended(self._obj)
        transport.ReplyFuture._complete(self, value, exc)


def _prefix(session: str, object_id: str, method: str) -> bytes:
    key = (session, object_id, method)
    prefix = _templates.get(key)
    if prefix is None:
        if len(_templates) >= _TEMPLATES_MAX:
            _templates.clear()
        # {"op", "obj", "m", "sess", "keep", "chain", "task", "id"}: what the general path sends
        prefix = _templates[key] = (
            transport.map_prefix(
                8, [("op", wire.CALL), ("obj", object_id), ("m", method), ("sess", session), ("keep", 1)]
            )
            + b"\xa5chain"
        )
    return prefix


def issue(proxy: Any, name: str, cls: type, args: tuple, kwargs: dict) -> Any:
    """An async call's future (a ``cls``), sent through the I/O thread; :data:`SLOW` when the call
    needs the general path (see the module's docstring). The proxy is not durable (the caller checked)."""
    local = _local
    if (
        local.chain is not None
        or local.scope is not None
        or local.on_block is not None
        or _reading.get() is not None
        or _user_deadline.get() is not None
        or (_modules.get("opentelemetry.trace") is not None and tracing.enabled())
    ):
        return SLOW
    aio = _modules.get("asyncio")
    if aio is not None and aio._get_running_loop() is not None:  # on a loop: its own lanes
        return SLOW if on_loop is None else on_loop(proxy, name, cls, args, kwargs)  # (checked already)
    object_id = proxy._mesh_id
    if _busy and object_id in _busy:  # calls in flight on a loop's lane: behind them (the general path)
        return SLOW
    body = _plain_body(args, kwargs)
    if body is None:
        return SLOW
    client = _clients._client  # (get_client, inlined: one call fewer per call)
    if client is None or not client.live():
        client = get_client()
    # 64 KiB (transport.BUFFER_THRESHOLD), or less once a server with a smaller limit is known: the
    # checked path says MessageTooLarge (unchecked, its socket would drop the frame: no reply ever)
    if len(body) > client.peers.lean_max:
        return SLOW
    return _send(client, proxy, name, cls, body)


def send(proxy: Any, name: str, cls: type, body: bytes) -> Any:
    """The lane's send of a call already checked (``issue``'s tests, the body's size against
    ``PeerBook.lean_max`` included; hook for ``mesh.client._aio_fast``, helper aiolane: a loop's
    plain call behind a burst, whose size it checked)."""
    return _send(get_client(), proxy, name, cls, body)


def _send(client: Any, proxy: Any, name: str, cls: type, body: bytes) -> Any:
    object_id = proxy._mesh_id
    node = client.node
    address = proxy._mesh_address
    rid = next(node._ids)  # (Node.next_id, inlined)
    # two fresh ids as ids.new_chain makes them (the module's prefix and counter: both renewed at a fork)
    counter, head = ids._counter, ids._prefix
    task = f"{head}.{next(counter)}"
    chain, raw = f"{head}.{next(counter)}".encode(), task.encode()
    prefix = _templates.get((client.session, object_id, name))  # (_prefix's lookup, inlined)
    if prefix is None:
        prefix = _prefix(client.session, object_id, name)
    if 65535 < rid < 4294967296:  # (pack_uint's uint 32, inlined: every id but the first 65,535)
        id_key, id_value = _ID_UINT32, rid.to_bytes(4, "big")
    else:
        id_key, id_value = _ID_KEY, _pack_uint(rid)
    if len(chain) < 32 and len(raw) < 32:  # (always, but for a counter past 10**18)
        header = b"".join(
            (prefix, _STR_HEADS[len(chain)], chain, _TASK_KEY, _STR_HEADS[len(raw)], raw, id_key, id_value)
        )
    else:
        header = (
            prefix
            + transport.pack_str(chain.decode())
            + _TASK_KEY
            + transport.pack_str(task)
            + _ID_KEY
            + _pack_uint(rid)
        )
    peers = client.peers
    # LaneReply(peers, object_id), inlined (two calls fewer per call)
    fut = _new(LaneReply)
    fut._value, fut._exc, fut._event, fut._callbacks = _REPLY_PENDING, None, None, None
    fut._peers, fut._obj = peers, object_id
    future, d = owner_future(cls, proxy, address, task, fut)
    fut._owner = d  # (before the send: the reply may come at once)
    with peers._lock:  # (PeerBook.lane_started, inlined)
        started = peers._lane_started
        started[object_id] = started.get(object_id, 0) + 1
    try:
        node.request_frames(address, rid, [_SIGNATURE, header, body], fut)
    except BaseException:
        d["_mesh_ref"] = None  # never sent: not a holder (its finalizer reports nothing)
        fut.set_exception(transport.TransportError("not sent"))  # (leaves the calls in flight)
        raise
    # our lease there keeps the result held until we release it (or exit); PeerBook.own's
    # held-already test, inlined (two calls fewer per call of a burst)
    lease = peers._leases.get(address)
    if lease is None or lease[0] > _LEASE_EVERY:
        client.own(address)
    return future


def read_plain(d: dict) -> Any:
    """The value of a lane future whose plain reply is here (its ``__dict__``), or :data:`_PENDING`
    when the general read must say (not done, an error, a pickled or big value, a forwarded future)."""
    call = d["_mesh_call"]
    kind = type(call)
    if kind is Replied:  # (a call of the general path too, once compacted)
        body = call.body
    elif kind is LaneReply and call._exc is None and type(call._value) is bytes:  # (bytes: a plain ok, done)
        body = call._value
    else:
        return _PENDING
    try:
        return _unpackb(body, raw=False, strict_map_key=False, ext_hook=_not_plain)
    except Exception:  # an ext value (a tuple, a pickle, a future...) or malformed: the codec decides
        return _PENDING


def _not_plain(code: int, data: bytes) -> Any:
    raise ValueError("an ext value: decoded by the codec")


def install(pending: Any) -> None:
    """The marker of a value not read yet (``mesh.client._aio.PENDING``, which ``mesh.client._future`` reads)."""
    global _PENDING
    _PENDING = pending
