"""Pipelined creations, sent many to a request: op ``create_many`` (1.4; the server side is
``mesh.server._create_many``).

A pipelined ``to_dist()`` (``mesh._placement.create``) encodes its object's arguments on the
calling thread (as a ``create`` would: futures in them become counted holders, an argument that
cannot travel fails there), then queues the object in the open batch of its (server, class).
The first object of a batch asks the I/O thread to send it (``call_soon``); whatever was queued
by then goes in that one request, at most ``MAX_ITEMS``. So a loop of ``to_dist()`` calls sends
a request per few hundred objects, and a lone ``to_dist()`` waits for no timer.

While an earlier batch to the same server is not answered yet, the I/O thread *holds* the next
one open instead (Nagle's rule, per server): it takes further objects and goes out with the
server's next answer (to any of its batches: a held batch waits a round trip at most, even while
full batches keep the server busy), or when it is full, or when one of its proxies is first
used (:meth:`Waiter.result` sends it at once). So the batch size grows with the rate a server is
given against the time it takes to answer: spread over many servers, each gets its objects in short runs, and without holding each
run went as a request of its own, a server's fixed cost per request (a wake-up of its threads,
on both sides) paid for a few objects. A lone creation, or the first after an answer, goes at
once as before; detached objects are never held (they must reach their server even if this
process ends first).

No per-object future: the proxies of a batch share one waiter (their ``_mesh_inst`` slot holds
it, see ``mesh._pipeline``), and the batch's reply (on the I/O thread) makes each built proxy a
plain one at once (``finish``). An object that was not built (its own ``err`` reply, the whole
request failed) gets the future its own ``create`` would have had, completed with that reply,
from ``retrack``: ``mesh._pipeline`` follows it unchanged from there (first use raises, names
the creation, NEEDCLASS retry, placement elsewhere). A server older than 1.4
answers ``badrequest`` (unknown op): the objects are sent again as ``create``s, and that server
gets no more batches. At most ``MAX_INFLIGHT`` batched objects per server are out at once: past
that, the creating thread waits for answers (``WINDOW_STALL`` at most per wait, as the transport's
window), so a fast creator never queues unbounded work.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import msgpack

import transport
from mesh import _create_hold, _scale_gc
from mesh._core import wire
from mesh._errors import ServerUnavailable
from mesh.client._held import held as _held_batches, set_release
from mesh.client._holders import counted_pickles, take_back

__all__ = ["MAX_INFLIGHT", "MAX_ITEMS", "Waiter", "abandon", "add", "encode_item", "old", "outstanding"]

MAX_ITEMS = 256  # objects in one create_many
MAX_ITEM_BYTES = 4096  # an object whose encoded arguments are larger goes as a create of its own
MAX_INFLIGHT = 20_000  # batched objects sent to one server and not answered yet
WINDOW_STALL = 1.0  # s: a creator waiting for answers goes on after this long without any

_local = threading.local()  # this thread's strict msgpack Packer (a Packer is not thread-safe)


class Waiter(transport.ReplyFuture):
    """What the proxies of one batch hold (their ``_mesh_inst`` slot) until its reply came: done
    once every proxy of the batch is settled (a plain proxy, or one following its own future).

    Waiting on it (a proxy's first use) sends its batch first if it is still open or held."""

    __slots__ = ("batch",)

    def __init__(self, batch: Any = None) -> None:
        super().__init__()
        self.batch = batch  # the batch until it is sent (then None: no cycle)

    def result(self, timeout: float | None = None) -> Any:
        batch = self.batch
        if batch is not None:
            _release(batch)
        return super().result(timeout)


class _Batch:
    __slots__ = ("client", "address", "cls_ref", "detached", "blob", "ids", "items", "proxies", "extras", "sent",
                 "held", "key", "waiter", "finish", "retrack", "made", "since")

    def __init__(self, client: Any, address: str, cls_ref: str, detached: bool, blob: bytes | None,
                 finish: Callable, retrack: Callable) -> None:
        self.client = client
        self.address = address
        self.cls_ref = cls_ref
        self.detached = detached
        self.blob = blob
        self.ids: list[str] = []
        self.items: list[bytes] = []
        self.proxies: list[Any] = []
        self.extras: list[Any] = []  # per object: what ``retrack`` needs to follow it alone
        self.sent = False
        self.held = False  # the I/O thread left it open: an earlier batch to its server is not answered yet
        self.key: tuple = ()
        self.waiter = Waiter(self)
        self.finish = finish  # finish(client, address, detached, proxies, info): the built ones (I/O thread)
        self.retrack = retrack  # retrack(proxy, extra, fut): one not built, ``fut`` its own create's reply
        self.made = _made[0]  # objects batched by this process before its first (mesh._create_hold)
        self.since = 0.0  # when it was held for its creator's loop (0: not held for that)


_lock = threading.Lock()
_answered = threading.Condition(_lock)
_open: dict[tuple, _Batch] = {}
_inflight: dict[str, int] = {}
_busy: dict[str, int] = {}  # address -> batches sent there and not answered yet
_unsent: dict[str, list[_Batch]] = _held_batches  # address -> its batches not sent yet, in creation order: open
# (the I/O thread's next turn sends them) or held (``batch.held``: until the server's next answer, see _flush);
# a call to that server sends them first (``mesh.client._proxy._invoke``, :func:`release_held`)
_made = [0]  # objects batched by this process (at _scale_gc.AT, its collector is tuned)
old: set[str] = set()  # servers that do not know create_many (1.3 and older)


def encode_item(args: tuple, kwargs: dict, attrs: dict | None) -> bytes | None:
    """The encoded ``{args, kwargs, attrs?}`` of one object, or None: too large or with buffers
    (then it goes as a ``create`` of its own). Raises what encoding a ``create`` would."""
    payload: dict[str, Any] = {"args": list(args), "kwargs": kwargs}
    if attrs:
        payload["attrs"] = attrs
    try:  # exact plain types pack as they are: what transport.encode makes of them (its fast path)
        body = _local.strict.pack(payload)
    except AttributeError:
        _local.strict = msgpack.Packer(use_bin_type=True, strict_types=True)
        return encode_item(args, kwargs, attrs)
    except (TypeError, ValueError, OverflowError):
        pass  # a tuple, an instance, a future...: pickled, futures counted
    else:
        return body if len(body) <= MAX_ITEM_BYTES else None
    with counted_pickles() as made:
        body, buffers = transport.encode(payload)
        if buffers or len(body) > MAX_ITEM_BYTES:
            take_back(made)
            return None
    return body


def add(client: Any, address: str, cls_ref: str, object_id: str, item: bytes, detached: bool,
        blob: bytes | None, proxy: Any, extra: Any, finish: Callable, retrack: Callable) -> bool:
    """Queue one object's creation: ``proxy`` holds its batch's :class:`Waiter` from now on, and
    the batch's reply settles it (``finish``, or ``retrack`` with ``extra``). False: this server
    takes ``create``s only (nothing queued)."""
    if address in old:
        return False
    key = (address, cls_ref, detached, blob is not None)
    with _lock:
        _wait_room(address)
        batch = _open.get(key)
        first = batch is None
        if first:
            batch = _open[key] = _Batch(client, address, cls_ref, detached, blob, finish, retrack)
            batch.key = key
            _unsent.setdefault(address, []).append(batch)
        object.__setattr__(proxy, "_mesh_inst", batch.waiter)  # before the batch can be answered
        batch.ids.append(object_id)
        batch.items.append(item)
        batch.proxies.append(proxy)
        batch.extras.append(extra)
        _inflight[address] = _inflight.get(address, 0) + 1
        _made[0] += 1
        at_scale = _made[0] == _scale_gc.AT
        full = len(batch.ids) >= MAX_ITEMS
        if full:
            _take(batch)
    if at_scale:
        _scale_gc.tune()
    if full:
        _send(batch)
    elif first:
        client.node.call_soon(_flush, key, batch)
        if client.node.closed:
            _flush(key, batch)
    return True


def outstanding() -> int:
    """Batched objects queued or sent and not answered yet."""
    with _lock:
        return sum(_inflight.values())


def _wait_room(address: str) -> None:
    """Caller holds ``_lock``: wait while ``MAX_INFLIGHT`` objects are out to ``address``."""
    while _inflight.get(address, 0) >= MAX_INFLIGHT:
        if not _answered.wait(WINDOW_STALL):
            return  # no answer for a while: go on (never wait forever)


def _take(batch: _Batch) -> None:
    """Caller holds ``_lock``: ``batch`` is closed and about to be sent (counted as out)."""
    batch.sent = True
    if _open.get(batch.key) is batch:
        del _open[batch.key]
    unsent = _unsent.get(batch.address)
    if unsent is not None:
        if batch in unsent:
            unsent.remove(batch)
        if not unsent:
            del _unsent[batch.address]
    batch.waiter.batch = None
    _busy[batch.address] = _busy.get(batch.address, 0) + 1


def _flush(key: tuple, batch: _Batch) -> None:
    """Send ``batch`` unless it went already (the I/O thread, or a closed node's caller), or hold
    it open while an earlier batch to its server is not answered (see the module docstring)."""
    with _lock:
        if batch.sent or batch.held:
            return
        if _hold.hold(batch):  # its creator's loop goes on: it waits for the server's next runs
            return  # (mesh._create_hold; not sent with the server's next answer: see _done)
        if _busy.get(batch.address) and not batch.detached and not batch.client.node.closed:
            batch.held = True  # (it stays in _unsent: _done sends it with the server's next answer)
            return
        _take(batch)
    _send(batch)


def release_held(address: str) -> None:
    """A call to ``address`` is about to go: the creations not sent yet for that server (held, or
    still open for the I/O thread's next turn) go first, so that the server sees them in program
    order (a call made after them never overtakes them there: on a busy server a creation queued
    behind a long call would wait for it)."""
    with _lock:
        due = [batch for batch in _unsent.get(address, ()) if not batch.sent]
        for batch in due:
            _take(batch)
    for batch in due:
        _send(batch)


set_release(release_held)


def _release(batch: _Batch) -> None:
    """Send ``batch`` now if it is not sent yet (a proxy of it is used: it must not wait)."""
    with _lock:
        if batch.sent:
            return
        _take(batch)
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


_hold = _create_hold.LoopHold(_lock, _unsent, _made, lambda batch: _take(batch), lambda batch: _send(batch))


def _answer(batch: _Batch, fut: Any) -> None:
    """The batch's reply (I/O thread): each proxy is settled with its object's outcome."""
    try:
        header, body, buffers = fut.result()
    except BaseException as exc:  # noqa: BLE001 - the transport's failure, for each object
        _fail(batch, exc)
        return
    if header.get("op") == wire.ERR:
        if header.get("kind") == wire.K_BADREQUEST and "unknown op" in str(header.get("msg", "")):
            old.add(batch.address)
            try:
                _one_by_one(batch)
            finally:
                _done(batch)
            return
        _settle(batch, None, [(header, body, buffers)] * len(batch.proxies))
        return
    try:
        reply = transport.decode(body, buffers)
        info, items = reply["info"], reply["items"]
        if type(items) is not list or len(items) != len(batch.proxies) or type(info) is not dict:
            raise ValueError("items do not match the objects sent")
    except Exception as exc:  # noqa: BLE001 - a malformed reply: each object fails with it
        _fail(batch, transport.TransportError(f"malformed create_many reply from {batch.address}: {exc}"))
        return
    outcomes: list[Any] = []
    for item in items:
        if item == 0:
            outcomes.append(None)
        elif type(item) is list and len(item) == 2 and type(item[0]) is dict:
            outcomes.append((item[0], item[1], []))
        else:
            outcomes.append(transport.TransportError(f"malformed create_many reply from {batch.address}"))
    _settle(batch, info, outcomes)


def _settle(batch: _Batch, info: dict | None, outcomes: list) -> None:
    """Settle every proxy of ``batch``: ``None`` built (``info`` the shared reply fields), else
    its own create's reply or failure, followed by ``batch.retrack``. Then its waiter is done."""
    try:
        built = [p for p, o in zip(batch.proxies, outcomes, strict=True) if o is None]
        if built:
            batch.finish(batch.client, batch.address, batch.detached, built, info)
        for proxy, extra, outcome in zip(batch.proxies, batch.extras, outcomes, strict=True):
            if outcome is None:
                continue
            fut = transport.ReplyFuture()
            if isinstance(outcome, BaseException):
                fut.set_exception(outcome)
            else:
                fut.set_result(outcome)
            batch.retrack(proxy, extra, fut)
    finally:
        _done(batch)


def _one_by_one(batch: _Batch) -> None:
    """A server older than create_many: each object goes as the ``create`` it stands for (its item
    is that request's body; a class sent by value is added at the msgpack level: nothing is unpickled)."""
    client = batch.client
    for proxy, extra, object_id, item in zip(batch.proxies, batch.extras, batch.ids, batch.items, strict=True):
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
            single = transport.ReplyFuture()
            single.set_exception(exc)
        batch.retrack(proxy, extra, single)


def _fail(batch: _Batch, exc: BaseException) -> None:
    _settle(batch, None, [exc] * len(batch.proxies))


def _done(batch: _Batch) -> None:
    """The batch is answered: its room is free, and its proxies' waiter done (every proxy settled)."""
    address = batch.address
    with _lock:
        n = _inflight.get(address, 0) - len(batch.proxies)
        if n > 0:
            _inflight[address] = n
        else:
            _inflight.pop(address, None)
        busy = _busy.get(address, 0) - 1
        if busy > 0:
            _busy[address] = busy
        else:
            _busy.pop(address, None)
        # an answer came: what waited for one goes now (at most a round trip, even while full batches
        # keep the server busy), in creation order; the open ones wait for the I/O thread's turn as before;
        # one held for its creator's loop (``since`` set) is not due here: mesh._create_hold sends it
        due = [held for held in _unsent.get(address, ()) if held.held and not held.sent and not held.since]
        for held in due:
            _take(held)  # (removes it from _unsent: hence the list first)
        _answered.notify_all()
    batch.extras = []  # the arguments, kept for a retry, go
    try:  # the held ones first: a call that the waiter's result lets go must not overtake them
        for held in due:
            _send(held)
    finally:
        batch.waiter.set_result(None)


def abandon() -> None:
    """The session ends (``mesh.shutdown()``): batches not sent fail, and every server is asked again."""
    with _lock:
        batches = list(_open.values())
        _open.clear()
        _unsent.clear()
        for batch in batches:
            batch.sent = True
            batch.waiter.batch = None
        old.clear()
        _hold.reset()
    for batch in batches:
        _fail(batch, ServerUnavailable("the mesh client was shut down (mesh.shutdown())"))

