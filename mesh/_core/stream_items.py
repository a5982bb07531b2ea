"""The body of a stream's partial reply: a batch of items, each encoded once by its producer.

An item is what ``transport.encode`` made of it: a body (msgpack) and its buffer frames (binary
values of 64 KiB or more travel as raw frames, never inside msgpack). A batch of items is one
message::

    body     msgpack [[item body (bin), ...], [buffer count of each item, ...]]
             (the counts list is empty when no item has buffers)
    buffers  the items' buffer frames, item after item

:func:`unpack` is a decoder of peer bytes: it checks the whole shape (bounded, plain msgpack, no
extension type) before it returns anything, and raises ``ValueError`` for anything else. The
items' own bodies are decoded later, one by one, by ``transport.decode`` (itself bounded).
"""

from __future__ import annotations

from typing import Any

import msgpack

__all__ = ["MAX_ITEMS", "pack", "pack_inline", "unpack", "unpack_inline"]

MAX_ITEMS = 1 << 16  # items in one batch a reader accepts


def pack(items: list[tuple[bytes, list[bytes]]], framed: bool = True) -> tuple[bytes, list[bytes]]:
    """One message's body and buffers for ``items`` (``(body, buffers)`` pairs).

    ``framed``: some item may have buffers (False: none has, they are not looked for).
    """
    counts: list[int] = []
    buffers: list[bytes] = []
    if framed and any(bufs for _, bufs in items):
        counts = [len(bufs) for _, bufs in items]
        for _, bufs in items:
            buffers.extend(bufs)
    return msgpack.packb([[body for body, _ in items], counts], use_bin_type=True), buffers


def pack_inline(bodies: list[bytes]) -> bytes:
    """The *inline* form of a batch of plain items (``inline: 1`` on the part; readers that asked
    for it with ``inline: 1`` on their ``stream`` request): one msgpack array of the items'
    values themselves, each the msgpack body the producer made of a scalar (bin, str, int, float,
    bool, nil): read with one ``unpackb``, no decode per item."""
    n = len(bodies)
    head = bytes((0x90 | n,)) if n < 16 else b"\xdc" + n.to_bytes(2, "big") if n < 1 << 16 else b"\xdd" + n.to_bytes(4, "big")
    return head + b"".join(bodies)


def unpack_inline(body: Any) -> list:
    """The items of an inline batch (plain values only).

    Raises:
        ValueError: not one array of at most :data:`MAX_ITEMS` plain values.
    """
    data = getattr(body, "buffer", body)  # a zmq.Frame
    try:
        value = msgpack.unpackb(data, raw=False, ext_hook=_refuse, max_array_len=MAX_ITEMS, max_map_len=0, max_ext_len=0)
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"malformed inline stream batch: {type(exc).__name__}: {exc}") from None
    if type(value) is not list:
        raise ValueError("malformed inline stream batch: expected one array of values")
    return value


def _refuse(code: int, data: bytes) -> Any:
    raise ValueError(f"extension type {code} in a stream batch")


def unpack(body: Any, buffers: list) -> list[tuple[Any, list]]:
    """The ``(body, buffers)`` of each item of a batch.

    Raises:
        ValueError: the batch is malformed (wrong shape, counts that do not match the frames...).
    """
    data = getattr(body, "buffer", body)  # a zmq.Frame
    try:
        value = msgpack.unpackb(
            data, raw=False, ext_hook=_refuse, max_array_len=MAX_ITEMS, max_map_len=0, max_ext_len=0,
        )
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"malformed stream batch: {type(exc).__name__}: {exc}") from None
    if type(value) is not list or len(value) != 2 or type(value[0]) is not list or type(value[1]) is not list:
        raise ValueError("malformed stream batch: expected [[item bodies], [buffer counts]]")
    bodies, counts = value
    if not all(type(b) is bytes for b in bodies):
        raise ValueError("malformed stream batch: an item body is not binary")
    if not counts:
        if buffers:
            raise ValueError("malformed stream batch: buffer frames without counts")
        return [(b, []) for b in bodies]
    if len(counts) != len(bodies) or not all(type(c) is int and c >= 0 for c in counts):
        raise ValueError("malformed stream batch: one non-negative buffer count per item is expected")
    if sum(counts) != len(buffers):
        raise ValueError(f"malformed stream batch: {sum(counts)} buffer frames announced, {len(buffers)} sent")
    out = []
    at = 0
    for b, c in zip(bodies, counts, strict=True):
        out.append((b, list(buffers[at:at + c])))
        at += c
    return out
