"""Value codec: msgpack where it can, cloudpickle where it must, raw frames for bulk bytes.

A value becomes one msgpack *body* plus a list of *buffers* that travel as
their own ZeroMQ frames (never copied through msgpack). msgpack ext types:

====  =========  ===========================================================
code  name       payload
====  =========  ===========================================================
1     PICKLED    msgpack ``[pickle_bytes, [buffer_index, ...]]``; protocol 5,
                 out-of-band pickle buffers are frames too
2     BUFREF     msgpack ``[buffer_index, kind]``; kind 0 bytes, 1 bytearray,
                 2 memoryview
3     TUPLE      msgpack array of the items (msgpack alone has no tuples)
====  =========  ===========================================================

Codes are wire values: never renumber. Map keys may be str, int, bytes,
float, bool or None; a dict with other keys is pickled whole. Integers outside
the 64-bit range are pickled.
"""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle
import msgpack

__all__ = ["BUFFER_THRESHOLD", "CodecError", "decode", "encode"]

EXT_PICKLED = 1  # wire value, never renumber
EXT_BUFREF = 2  # wire value, never renumber
EXT_TUPLE = 3  # wire value, never renumber

# pyzmq copies anything below 64 KiB anyway (zmq.COPY_THRESHOLD), so smaller
# binary values stay inline in msgpack.
BUFFER_THRESHOLD = 64 * 1024

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_KEY_TYPES = (str, int, bytes, float, bool, type(None))
_BUF_KINDS = {bytes: 0, bytearray: 1, memoryview: 2}


class CodecError(ValueError):
    """A body that cannot be encoded or decoded."""


def encode(value: Any, *, threshold: int = BUFFER_THRESHOLD) -> tuple[bytes, list[Any]]:
    """Encode a value.

    Returns:
        ``(body, buffers)``: the msgpack body and the out-of-band buffers.

    Raises:
        CodecError: the value cannot be pickled.
    """
    buffers: list[Any] = []
    try:
        body = msgpack.packb(_walk(value, buffers, threshold), use_bin_type=True)
    except CodecError:
        raise
    except Exception as exc:
        raise CodecError(f"cannot encode {type(value).__name__}: {exc}") from exc
    return body, buffers


def decode(body: Any, buffers: list[Any] = (), *, allow_pickle: bool = True) -> Any:  # type: ignore[assignment]
    """Decode a body made by :func:`encode`.

    Args:
        body: the body frame (bytes, memoryview or zmq.Frame).
        buffers: the trailing buffer frames.
        allow_pickle: when False, a pickled value raises instead of loading.

    Raises:
        CodecError: malformed body, bad buffer reference, or a refused pickle.
    """
    bufs = [_view(b) for b in buffers]

    def ext_hook(code: int, data: bytes) -> Any:
        if code == EXT_TUPLE:
            return tuple(_unpack(data, ext_hook))
        if code == EXT_BUFREF:
            index, kind = _unpack(data, ext_hook)
            view = _buffer(bufs, index)
            if kind == 2:
                return view
            return bytearray(view) if kind == 1 else bytes(view)
        if code == EXT_PICKLED:
            if not allow_pickle:
                raise CodecError("pickled values are not accepted from this peer")
            payload, indices = _unpack(data, ext_hook)
            try:
                return pickle.loads(payload, buffers=[_buffer(bufs, i) for i in indices])
            except CodecError:
                raise
            except Exception as exc:
                raise CodecError(f"cannot unpickle value: {type(exc).__name__}: {exc}") from exc
        raise CodecError(f"unknown ext type {code}")

    try:
        return _unpack(_view(body), ext_hook)
    finally:
        # ext_hook refers to itself (nested values): break the cycle now, or the
        # received buffers live until the garbage collector runs.
        ext_hook = None  # noqa: F841


def _unpack(data: Any, ext_hook: Any) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=ext_hook)
    except CodecError:
        raise
    except Exception as exc:  # msgpack raises ValueError, ExtraData, StackError, ...
        raise CodecError(f"malformed body: {type(exc).__name__}: {exc}") from None


def _view(frame: Any) -> Any:
    buf = getattr(frame, "buffer", None)  # zmq.Frame
    return buf if buf is not None else frame


def _buffer(bufs: list[Any], index: Any) -> Any:
    if not isinstance(index, int) or not 0 <= index < len(bufs):
        raise CodecError(f"buffer reference {index!r} out of range ({len(bufs)} buffers)")
    return bufs[index]


def _walk(obj: Any, bufs: list[Any], threshold: int) -> Any:
    t = type(obj)
    if t is str or t is float or t is bool or obj is None:
        return obj
    if t is int:
        return obj if _INT_MIN <= obj <= _INT_MAX else _pickled(obj, bufs, threshold)
    if t is list:
        return [_walk(x, bufs, threshold) for x in obj]
    if t is tuple:
        return msgpack.ExtType(
            EXT_TUPLE,
            msgpack.packb([_walk(x, bufs, threshold) for x in obj], use_bin_type=True),
        )
    if t is dict:
        if all(type(k) in _KEY_TYPES for k in obj):
            return {k: _walk(v, bufs, threshold) for k, v in obj.items()}
        return _pickled(obj, bufs, threshold)
    if t in _BUF_KINDS:
        size = obj.nbytes if t is memoryview else len(obj)
        if size >= threshold:
            bufs.append(obj)
            return msgpack.ExtType(EXT_BUFREF, msgpack.packb([len(bufs) - 1, _BUF_KINDS[t]]))
        return bytes(obj) if t is memoryview else obj
    return _pickled(obj, bufs, threshold)


def _pickled(obj: Any, bufs: list[Any], threshold: int) -> msgpack.ExtType:
    indices: list[int] = []

    def buffer_callback(pb: pickle.PickleBuffer) -> bool:
        raw = pb.raw()
        if raw.nbytes < threshold:
            return True  # keep small buffers in band
        bufs.append(raw)
        indices.append(len(bufs) - 1)
        return False

    try:
        payload = cloudpickle.dumps(obj, protocol=5, buffer_callback=buffer_callback)
    except Exception as exc:
        raise CodecError(f"cannot pickle {type(obj).__name__}: {exc}") from exc
    return msgpack.ExtType(EXT_PICKLED, msgpack.packb([payload, indices], use_bin_type=True))
