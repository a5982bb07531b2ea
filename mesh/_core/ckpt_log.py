"""Incremental checkpoints: a full *base* now and then, small sealed *deltas* in between.

A checkpoint is the pickle of an object's state. Writing all of it after every call costs what the
state weighs (a memory of 1,000 messages: ~145 KB a call). Instead a :class:`Chain` (one per
durable object, on the server that hosts it) keeps the bytes it saved last and writes:

* nothing but a generation check when the new pickle is byte-for-byte the old one (a call that
  changed nothing);
* a **delta** otherwise: patches that turn the previous pickle into the new one, found by comparing
  bytes (a common prefix, hopping over short same-length mismatches such as pickle FRAME headers, a
  common suffix, the middle in between). A message appended to a memory is a delta of ~200 bytes.
  The delta carries the version it makes, the base version it applies to and a BLAKE2b digest of
  the whole resulting pickle: a restore that does not rebuild exactly those bytes fails;
* a new **base** (the full pickle, in the store's ``ckpt`` value, which drops the deltas of the
  previous base in the same step) first, after a restore or a failed write, and whenever the
  deltas since the base reach :data:`MAX_DELTAS` or weigh as much as the state itself. So the store
  holds at most about twice the state, a call writes on average its delta plus 1/128 of the state,
  and a restore applies at most :data:`MAX_DELTAS` deltas.

Every base and delta is sealed (:func:`mesh._core.state_store.seal`, kinds ``checkpoint`` and
``delta``, MAC keyed from the secret over the object id too) and checked before it is decoded;
nothing is unpickled before the digest of the rebuilt bytes matched. :func:`read` gives the
latest complete version: the base and its deltas in order (versions consecutive, each for that
base); a delta torn by a kill mid-append (directory store) is the tail of the log and was never
acknowledged, so it is left out.
"""

from __future__ import annotations

import struct
import threading
from typing import Any

import msgpack

from mesh._core.state_store import StateStore, StateStoreError, seal, unseal

try:  # the C module: ``hashlib`` would load OpenSSL's libcrypto too (1.5-3 MiB of a plain server's memory)
    from _blake2 import blake2b
except ImportError:  # pragma: no cover  (not CPython)
    from hashlib import blake2b

__all__ = ["MAX_DELTAS", "Chain", "apply", "decode_delta", "diff", "digest", "encode_delta", "read"]

BASE = struct.Struct("!QQ")  # a base's payload: version, generation, then the pickle
MAX_DELTAS = 128  # deltas after a base before the next base
MAX_DIFF = 64 << 20  # states bigger than this are written whole every time (no copy kept in memory)
_BLOCK = 4096
_HOP = 16  # a same-length mismatch this short is patched over (a FRAME header is 9 bytes) ...
_MATCH = 64  # ... when this many bytes agree after it
_MAX_PATCHES = 32


def digest(data: bytes) -> bytes:
    return blake2b(data, digest_size=16).digest()


def _first_diff(a: bytes, b: bytes, i: int, n: int) -> int:
    """The first index in ``[i, n)`` where ``a`` and ``b`` differ (``n`` when none)."""
    while i < n:
        j = min(i + _BLOCK, n)
        if a[i:j] == b[i:j]:
            i = j
            continue
        lo, hi = i, j  # the first difference is in [lo, hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if a[lo:mid] == b[lo:mid]:
                lo = mid
            else:
                hi = mid
        return lo
    return n


def _common_suffix(a: bytes, b: bytes, limit: int) -> int:
    la, lb, s = len(a), len(b), 0
    while s < limit:
        step = min(_BLOCK, limit - s)
        if a[la - s - step:la - s] == b[lb - s - step:lb - s]:
            s += step
            continue
        if step == 1:
            break
        lo, hi = 0, step  # bytes that agree at the end of this block: in [lo, hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if a[la - s - mid:la - s] == b[lb - s - mid:lb - s]:
                lo = mid
            else:
                hi = mid
        return s + lo
    return s


def diff(old: bytes, new: bytes) -> list[tuple[int, int, bytes]]:
    """Patches ``(offset in old, length replaced, new bytes)`` that :func:`apply` turns ``old`` into ``new`` with."""
    la, lb = len(old), len(new)
    n = min(la, lb)
    patches: list[tuple[int, int, bytes]] = []
    i = 0
    while True:
        i = _first_diff(old, new, i, n)
        if i >= n or len(patches) >= _MAX_PATCHES:
            break
        hop = next((k for k in range(1, _HOP + 1) if i + k + _MATCH <= n
                    and old[i + k:i + k + _MATCH] == new[i + k:i + k + _MATCH]), 0)
        if not hop:
            break
        patches.append((i, hop, new[i:i + hop]))
        i += hop
    s = _common_suffix(old, new, n - i)
    if la - s - i or lb - s - i:
        patches.append((i, la - s - i, new[i:lb - s]))
    return patches


def apply(old: bytes, patches: list[tuple[int, int, bytes]]) -> bytes:
    """``old`` with ``patches`` applied (ValueError: they do not fit it)."""
    view, out, pos = memoryview(old), bytearray(), 0
    for off, length, data in patches:
        if off < pos or length < 0 or off + length > len(old):
            raise ValueError(f"patch at {off}+{length} does not fit {len(old)} bytes")
        out += view[pos:off]
        out += data
        pos = off + length
    out += view[pos:]
    return bytes(out)


def encode_delta(version: int, gen: int, base: int, whole: bytes, patches: list[tuple[int, int, bytes]]) -> bytes:
    return msgpack.packb([version, gen, base, digest(whole), [list(p) for p in patches]], use_bin_type=True)


def decode_delta(payload: bytes) -> tuple[int, int, int, bytes, list[tuple[int, int, bytes]]]:
    """A delta's fields (ValueError: not a delta)."""
    try:
        value = msgpack.unpackb(payload, raw=False, use_list=True)
    except Exception as exc:  # noqa: BLE001 - msgpack raises several kinds
        raise ValueError(f"not a delta: {type(exc).__name__}") from None
    if not (isinstance(value, list) and len(value) == 5 and all(type(v) is int and v >= 0 for v in value[:3])
            and isinstance(value[3], bytes) and len(value[3]) == 16 and isinstance(value[4], list)):
        raise ValueError("not a delta")
    patches = []
    for p in value[4]:
        if not (isinstance(p, list) and len(p) == 3 and type(p[0]) is int and type(p[1]) is int
                and p[0] >= 0 and p[1] >= 0 and isinstance(p[2], bytes)):
            raise ValueError("not a delta: bad patch")
        patches.append((p[0], p[1], p[2]))
    return value[0], value[1], value[2], value[3], patches


def read(store: StateStore, object_id: str) -> tuple[int, bytes] | None:
    """The latest complete checkpoint ``(version, pickle)`` of ``object_id``, or None when it has none.

    Raises:
        StateStoreError: the base or a delta is corrupted, forged, or out of order (names the object
            and the store).
    """
    base, deltas = store.get_checkpoint(object_id)
    if base is None:
        return None
    raw = unseal(store.key, "checkpoint", object_id, base, store.where)
    if len(raw) < BASE.size:
        raise StateStoreError(f"the checkpoint of object {object_id} in the state store {store.where} is corrupted: "
                              "too short")
    base_version, _ = BASE.unpack_from(raw)
    version, data = base_version, raw[BASE.size:]
    for blob in deltas:
        try:
            v, _gen, b, want, patches = decode_delta(unseal(store.key, "delta", object_id, blob, store.where))
            if b != base_version or v != version + 1:
                raise ValueError(f"delta for version {v} of base {b} does not follow version {version} of base {base_version}")
            data = apply(data, patches)
            if digest(data) != want:
                raise ValueError(f"version {v} rebuilt does not match its digest")
        except ValueError as exc:
            raise StateStoreError(f"the checkpoint of object {object_id} in the state store {store.where} is "
                                  f"corrupted: {exc}: refused") from None
        version = v
    return version, data


class Chain:
    """One object's checkpoints on the server that hosts it: what was saved last, and since which base."""

    __slots__ = ("last", "base", "deltas", "delta_bytes", "lock")

    def __init__(self) -> None:
        self.last: bytes | None = None  # the pickle saved last (None: the next write is a base)
        self.base = -1
        self.deltas = 0
        self.delta_bytes = 0
        self.lock = threading.Lock()

    def write(self, store: StateStore, object_id: str, gen: int, version: int, data: bytes) -> tuple[bool, int, int]:
        """Save ``data`` as ``version + 1`` (or not at all when unchanged), fenced by ``gen``.

        Returns:
            ``(current, version saved, bytes written)``; ``current`` is False when the object moved on.

        Raises:
            StateStoreError: the store failed (the next write is a base).
        """
        last = self.last
        try:
            if last is not None and data == last:
                return store.fence(object_id, gen), version, 0
            patches = None
            if last is not None and self.deltas < MAX_DELTAS:
                patches = diff(last, data)
                if self.delta_bytes + sum(len(p[2]) for p in patches) > max(len(data), 4096):
                    patches = None
            if patches is not None:
                blob = seal(store.key, "delta", object_id, encode_delta(version + 1, gen, self.base, data, patches))
                current = store.append_delta(object_id, blob, gen, self.base)
                if current:
                    self.deltas += 1
                    self.delta_bytes += len(blob)
            else:
                blob = seal(store.key, "checkpoint", object_id, BASE.pack(version + 1, gen) + data)
                current = store.put_checkpoint(object_id, blob, gen, version + 1)
                if current:
                    self.base, self.deltas, self.delta_bytes = version + 1, 0, 0
        except BaseException:
            self.last = None
            raise
        if not current:
            return False, version, 0
        self.last = data if len(data) <= MAX_DIFF else None
        return True, version + 1, len(blob)

    def info(self) -> dict[str, Any]:
        return {"base": self.base, "deltas": self.deltas}
