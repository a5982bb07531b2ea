"""Pipelined creations, sent many to a request: op ``create_many`` (1.4; the server side is
``mesh.server._create_many``).

A pipelined ``to_dist()`` (``mesh._placement.create``) encodes its object's arguments on the
calling thread (as a ``create`` would: futures in them become counted holders, an argument that
cannot travel fails there), then queues the object in the open batch of its (server, class).
The first object of a batch asks the I/O thread to send it (``call_soon``); whatever was queued
by then goes in that one request, at most ``MAX_ITEMS``. So a loop of ``to_dist()`` calls sends
a request per few hundred objects, and a lone ``to_dist()`` waits for no timer.

Each object gets its own transport future, completed from the batch's reply with the reply its
own ``create`` would have had: ``mesh._pipeline`` follows it unchanged. A server older than 1.4
answers ``badrequest`` (unknown op): the objects are sent again as ``create``s, and that server
gets no more batches. At most ``MAX_INFLIGHT`` batched objects per server are out at once: past
that, the creating thread waits for answers (``WINDOW_STALL`` at most per wait, as the transport's
window), so a fast creator never queues unbounded work.
"""

from __future__ import annotations

import threading
from typing import Any

import msgpack

import transport
from mesh._core import wire
from mesh._errors import ServerUnavailable
from mesh.client._holders import counted_pickles, take_back

__all__ = ["MAX_INFLIGHT", "MAX_ITEMS", "abandon", "add", "encode_item", "old"]

MAX_ITEMS = 256  # objects in one create_many
MAX_ITEM_BYTES = 4096  # an object whose encoded arguments are larger goes as a create of its own
MAX_INFLIGHT = 20_000  # batched objects sent to one server and not answered yet
WINDOW_STALL = 1.0  # s: a creator waiting for answers goes on after this long without any

_PLAIN = (int, str, float, bool, type(None))
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


class _Batch:
    __slots__ = ("client", "address", "cls_ref", "detached", "blob", "ids", "items", "futs", "sent")

    def __init__(self, client: Any, address: str, cls_ref: str, detached: bool, blob: bytes | None) -> None:
        self.client = client
        self.address = address
        self.cls_ref = cls_ref
        self.detached = detached
        self.blob = blob
        self.ids: list[str] = []
        self.items: list[bytes] = []
        self.futs: list[Any] = []
        self.sent = False


_lock = threading.Lock()
_answered = threading.Condition(_lock)
_open: dict[tuple, _Batch] = {}
_inflight: dict[str, int] = {}
old: set[str] = set()  # servers that do not know create_many (1.3 and older)


def encode_item(args: tuple, kwargs: dict, attrs: dict | None) -> bytes | None:
    """The encoded ``{args, kwargs, attrs?}`` of one object, or None: too large or with buffers
    (then it goes as a ``create`` of its own). Raises what encoding a ``create`` would."""
    payload: dict[str, Any] = {"args": list(args), "kwargs": kwargs}
    if attrs:
        payload["attrs"] = attrs
    if not kwargs and not attrs and all(type(a) in _PLAIN and (type(a) is not int or _INT_MIN <= a <= _INT_MAX)
                                        for a in args):
        return msgpack.packb(payload, use_bin_type=True)  # plain scalars: what transport.encode makes
    with counted_pickles() as made:
        body, buffers = transport.encode(payload)
        if buffers or len(body) > MAX_ITEM_BYTES:
            take_back(made)
            return None
    return body


def add(client: Any, address: str, cls_ref: str, object_id: str, item: bytes, detached: bool,
        blob: bytes | None) -> Any | None:
    """Queue one object's creation; its transport future, or None (this server takes ``create``s only)."""
    if address in old:
        return None
    fut = transport.ReplyFuture()
    key = (address, cls_ref, detached, blob is not None)
    with _lock:
        _wait_room(address)
        batch = _open.get(key)
        first = batch is None
        if first:
            batch = _open[key] = _Batch(client, address, cls_ref, detached, blob)
        batch.ids.append(object_id)
        batch.items.append(item)
        batch.futs.append(fut)
        _inflight[address] = _inflight.get(address, 0) + 1
        full = len(batch.ids) >= MAX_ITEMS
        if full:
            del _open[key]
            batch.sent = True
    if full:
        _send(batch)
    elif first:
        client.node.call_soon(_flush, key, batch)
        if client.node.closed:
            _flush(key, batch)
    return fut


def _wait_room(address: str) -> None:
    """Caller holds ``_lock``: wait while ``MAX_INFLIGHT`` objects are out to ``address``."""
    while _inflight.get(address, 0) >= MAX_INFLIGHT:
        if not _answered.wait(WINDOW_STALL):
            return  # no answer for a while: go on (never wait forever)


def _flush(key: tuple, batch: _Batch) -> None:
    """Send ``batch`` unless it went already (the I/O thread, or a closed node's caller)."""
    with _lock:
        if batch.sent:
            return
        batch.sent = True
        if _open.get(key) is batch:
            del _open[key]
    _send(batch)


def _send(batch: _Batch) -> None:
    header: dict[str, Any] = {"op": wire.CREATE_MANY, "objs": batch.ids, "cls": batch.cls_ref}
    if batch.detached:
        header["detached"] = 1
    payload: dict[str, Any] = {"items": batch.items}
    if batch.blob is not None:
        payload["blob"] = batch.blob
        payload["py"] = wire.PY_VERSION
    client = batch.client
    try:
        fut = client.request(batch.address, header, payload, timeout=client.settings.call_timeout)
    except BaseException as exc:  # noqa: BLE001 - e.g. the node closed: every object fails alike
        _fail(batch, exc)
        return
    fut.add_done_callback(lambda f: _answer(batch, f))


def _answer(batch: _Batch, fut: Any) -> None:
    """The batch's reply (I/O thread): complete each object's future with its own reply."""
    try:
        header, body, buffers = fut.result()
    except BaseException as exc:  # noqa: BLE001 - the transport's failure, for each object
        _fail(batch, exc)
        return
    if header.get("op") == wire.ERR:
        if header.get("kind") == wire.K_BADREQUEST and "unknown op" in str(header.get("msg", "")):
            old.add(batch.address)
            _done(batch)
            _one_by_one(batch)
            return
        for f in batch.futs:
            f.set_result((header, body, buffers))
        _done(batch)
        return
    try:
        reply = transport.decode(body, buffers)
        info, items = reply["info"], reply["items"]
        if type(items) is not list or len(items) != len(batch.futs):
            raise ValueError("items do not match the objects sent")
        shared = transport.encode(info)[0]
    except Exception as exc:  # noqa: BLE001 - a malformed reply: each object fails with it
        _fail(batch, transport.TransportError(f"malformed create_many reply from {batch.address}: {exc}"))
        return
    ok = {"op": wire.OK}
    for f, item in zip(batch.futs, items, strict=True):
        if item == 0:
            f.set_result((ok, shared, []))
        elif type(item) is list and len(item) == 2 and type(item[0]) is dict:
            f.set_result((item[0], item[1], []))
        else:
            f.set_exception(transport.TransportError(f"malformed create_many reply from {batch.address}"))
    _done(batch)


def _one_by_one(batch: _Batch) -> None:
    """A server older than create_many: each object goes as the ``create`` it stands for (its item
    is that request's body; a class sent by value is added at the msgpack level: nothing is unpickled)."""
    client = batch.client
    for f, object_id, item in zip(batch.futs, batch.ids, batch.items, strict=True):
        header: dict[str, Any] = {"op": wire.CREATE, "obj": object_id, "cls": batch.cls_ref}
        if batch.detached:
            header["detached"] = 1
        try:
            if batch.blob is not None:
                payload = msgpack.unpackb(item, raw=False, strict_map_key=False, ext_hook=msgpack.ExtType)
                payload["blob"], payload["py"] = batch.blob, wire.PY_VERSION
                item = msgpack.packb(payload, use_bin_type=True)
            header["id"] = client.node.next_id()
            header["sess"] = client.session
            single = client.node.request(batch.address, header, item, timeout=client.settings.call_timeout)
        except BaseException as exc:  # noqa: BLE001 - that object fails at its first use
            f.set_exception(exc)
            continue
        single.add_done_callback(lambda s, f=f: _relay(s, f))


def _relay(source: Any, fut: Any) -> None:
    try:
        fut.set_result(source.result())
    except BaseException as exc:  # noqa: BLE001
        fut.set_exception(exc)


def _fail(batch: _Batch, exc: BaseException) -> None:
    for f in batch.futs:
        f.set_exception(exc)
    _done(batch)


def _done(batch: _Batch) -> None:
    with _lock:
        n = _inflight.get(batch.address, 0) - len(batch.futs)
        if n > 0:
            _inflight[batch.address] = n
        else:
            _inflight.pop(batch.address, None)
        _answered.notify_all()


def abandon() -> None:
    """The session ends (``mesh.shutdown()``): batches not sent fail, and every server is asked again."""
    with _lock:
        batches = list(_open.values())
        _open.clear()
        for batch in batches:
            batch.sent = True
        old.clear()
    for batch in batches:
        _fail(batch, ServerUnavailable("the mesh client was shut down (mesh.shutdown())"))

