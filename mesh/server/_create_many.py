"""Op ``create_many`` (1.4), server side: the body's check and the one reply for many objects.

A pipelined client sends the creations of one class on this server in batches: header
``objs`` (the new objects' ids) and ``cls``; body ``{items: [bytes...], blob?, py?}``, each item
the encoded ``{args, kwargs, attrs?}`` of one object (decoded on a worker, as a ``create``'s
body), ``blob``/``py`` as in ``create``. Every object is registered at once (calls queue behind
its constructor), built in turn, and the request is answered once, when the last is built:
``{info, items}``, ``info`` the fields of a ``create`` reply shared by all (limits, pool, run),
``items`` one entry per object: ``0`` built, or ``[header, body]`` of its own ``err`` reply.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import msgpack

from mesh._core import wire
from mesh.server._calls import ok
from mesh.server._checks import LIST_MAX

__all__ = ["BUILT", "Batch", "parse_body"]

BUILT = ({"op": wire.OK}, wire.NIL, [])  # a batch item built (its reply fields are the batch's info)
_MAX_BODY = 64 << 20


def parse_body(body: Any, count: int) -> tuple[list[bytes], bytes | None, str | None] | str:
    """``(items, blob, py)`` of a ``create_many`` body, or what is wrong with it (plain msgpack only)."""
    data = getattr(body, "buffer", body)
    try:
        if len(data) > _MAX_BODY:
            return "body too large"
        value = msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_no_ext)
    except Exception as exc:  # noqa: BLE001 - any malformed body is refused
        return f"malformed body: {type(exc).__name__}"
    if type(value) is not dict:
        return "the body must be a map"
    items, blob, py = value.get("items"), value.get("blob"), value.get("py")
    if type(items) is not list or len(items) != count or count > LIST_MAX:
        return "'items' must be a list with one entry per id of 'objs'"
    if not all(type(item) is bytes for item in items):
        return "each item must be bytes (an encoded {args, kwargs})"
    if blob is not None and type(blob) is not bytes:
        return "'blob' must be bytes"
    if py is not None and type(py) is not str:
        return "'py' must be a string"
    return items, blob, py


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"extension type {code}")


class Batch:
    """The answers of one ``create_many``: ``done(i, entry)`` from any thread; the last one replies."""

    __slots__ = ("entries", "left", "lock", "reply", "info")

    def __init__(self, count: int, reply: Callable[[Any], None], info: Callable[[], dict]) -> None:
        self.entries: list[Any] = [None] * count
        self.left = count
        self.lock = threading.Lock()
        self.reply = reply
        self.info = info

    def done(self, index: int, entry: Any) -> None:
        with self.lock:
            if self.entries[index] is not None:
                return
            self.entries[index] = entry
            self.left -= 1
            if self.left:
                return
        items = [0 if e is BUILT else [e[0], bytes(e[1])] for e in self.entries]
        self.reply(ok({"info": self.info(), "items": items}))
