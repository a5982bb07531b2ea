"""Header templates: the msgpack bytes of headers that repeat, made without a ``packb`` per field.

A sync call's request header differs from the last one to the same method only in its ``chain``
and ``id``, and an ``ok`` reply's only in its ``re``: the constant part is packed once
(:func:`map_prefix`) and the varying values are appended (:func:`pack_str`, :func:`pack_uint`).
The bytes are exactly what ``msgpack.packb`` makes of the same map (keys in the same order), so a
peer cannot tell a templated header from another; :func:`ok_header` is the reply header that
:func:`transport._framing.pack_header` makes of ``{"op": "ok", "re": rid}``.
"""

from __future__ import annotations

import threading
from typing import Any

import msgpack

__all__ = ["map_prefix", "ok_header", "ok_rid", "pack_plain", "pack_str", "pack_uint"]

_packb = msgpack.packb
_local = threading.local()
_OK_RE = b"\x82\xa2op\xa2ok\xa2re"  # {"op": "ok", "re": ...} up to the value of "re"
_UINT_HEADS = {12: 0xCC, 13: 0xCD, 15: 0xCE, 19: 0xCF}  # header length -> its uint 8/16/32/64 marker


def pack_plain(value: Any) -> bytes:
    """``msgpack.packb(value, use_bin_type=True)`` with this thread's packer: ``packb`` makes a
    ``Packer`` (and its buffer) per call, several times the cost of packing a small value.

    Raises:
        TypeError, ValueError, OverflowError...: as ``packb`` (the packer stays usable).
    """
    try:
        return _local.packer.pack(value)
    except AttributeError:
        _local.packer = msgpack.Packer(use_bin_type=True)
        return _local.packer.pack(value)


def pack_uint(n: int) -> bytes:
    """msgpack of a non-negative int (as ``packb`` makes it: the shortest form)."""
    if n < 128:
        return bytes((n,))
    if n < 65536:
        return (0xCD0000 | n).to_bytes(3, "big") if n >= 256 else bytes((0xCC, n))
    if n < 4294967296:
        return b"\xce" + n.to_bytes(4, "big")
    return _packb(n)


def pack_str(s: str) -> bytes:
    """msgpack of a str."""
    raw = s.encode()
    n = len(raw)
    if n < 32:
        return bytes((0xA0 | n,)) + raw
    return _packb(s)


def map_prefix(entries: int, fixed: list[tuple[str, Any]]) -> bytes:
    """The start of a map of ``entries`` entries whose first entries are ``fixed`` (key, value)
    pairs; the caller appends the packed keys and values of the rest (at most 15 entries)."""
    if not 0 <= entries < 16 or len(fixed) > entries:
        raise ValueError("a template map has at most 15 entries")
    return bytes((0x80 | entries,)) + b"".join(_packb(k) + _packb(v, use_bin_type=True) for k, v in fixed)


def ok_header(rid: int) -> bytes:
    """The packed header of an ``ok`` reply to request ``rid``, without a value field."""
    return _OK_RE + (pack_uint(rid) if rid >= 0 else _packb(rid))


def ok_rid(raw: bytes) -> int | None:
    """The request id of a reply header that is exactly :func:`ok_header` of it (a plain ``ok``),
    read from its bytes; None for any other header (the caller unpacks it)."""
    if not raw.startswith(_OK_RE):
        return None
    n = len(raw)
    if n == 11:
        rid = raw[10]
        return rid if rid < 0x80 else None
    if _UINT_HEADS.get(n) == raw[10]:
        return int.from_bytes(raw[11:], "big")
    return None
