"""Value codec: msgpack where it can, pickle where it must, raw frames for bulk bytes.

Pickling is :mod:`transport._pickler`'s: the C pickler for objects of classes imported by name (a
``Msg``), cloudpickle only for a value with a part that must go by value (a lambda, a ``__main__``
class). A payload made by cloudpickle is loaded by ``transport._byvalue_load`` while cloudpickle is
not loaded in this process (a server), so that most never need it.

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

Bounds (any input, from any peer, decodes or fails with :class:`CodecError`,
never crashes the process):

- ext values nest at most :data:`MAX_EXT_DEPTH` deep. Each nested ext is
  decoded by a nested ``msgpack.unpackb``, which costs ~40 KiB of C stack: 200
  levels overflowed the thread's stack (SIGSEGV). The encoder never nests
  deeper: a container nested :data:`MAX_DEPTH` deep is pickled from there on
  (the unpickler is iterative, so deep values still round-trip), and a value
  too deep even for pickle (Python's recursion limit) is refused.
- plain msgpack arrays and maps nest at most 1024 deep (the encoder's fast
  path sends lists and maps of exact plain types as they are, up to msgpack's
  own 511 levels; deeper ones take the walk and are pickled from 31 down) (msgpack's own
  iterative stack); declared lengths are bounded by the bytes received.
- each buffer frame is referenced at most once, so a small body cannot make
  many copies of one large frame.

Things that cannot travel (open files, sockets, locks, threads, generators,
ZeroMQ sockets) raise :class:`Untransferable` instead of arriving as
something else (cloudpickle turns an open text file into a ``StringIO``).
"""

from __future__ import annotations

import pickle
import sys
import threading
from typing import Any

import msgpack

from transport._errors import CodecError, Untransferable
from transport._pickler import dumps as _dumps, set_attempt_hooks, set_reducer_hook

__all__ = [
    "BUFFER_THRESHOLD",
    "MAX_DEPTH",
    "MAX_EXT_DEPTH",
    "CodecError",
    "Untransferable",
    "decode",
    "encode",
    "set_attempt_hooks",
    "set_reducer_hook",
]

EXT_PICKLED = 1  # wire value, never renumber
EXT_BUFREF = 2  # wire value, never renumber
EXT_TUPLE = 3  # wire value, never renumber

# pyzmq copies anything below 64 KiB anyway (zmq.COPY_THRESHOLD), so smaller
# binary values stay inline in msgpack.
BUFFER_THRESHOLD = 64 * 1024

# Containers (list, dict, tuple) nested this deep are pickled from there on.
MAX_DEPTH = 31
# Ext values nested deeper than this are refused by the decoder (the encoder makes at most
# MAX_DEPTH + 1: the tuples above the limit, then the pickle). ~40 KiB of C stack each.
MAX_EXT_DEPTH = 32

_CP = "cloudpickle.cloudpickle"  # the module a payload by value names (its load-side functions)
_CP_MARK = b"cloudpickle"
# looked for in the first 16 KiB of a payload only (~4 us at most: a 10 MB one takes ~2.6 ms to scan,
# more than to load); one that names cloudpickle further on loads with cloudpickle, correctly
_CP_SCAN = 16 * 1024
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_KEY_TYPES = (str, int, bytes, float, bool, type(None))
_BUF_KINDS = {bytes: 0, bytearray: 1, memoryview: 2}
_local = threading.local()  # a msgpack Packer per thread (a Packer is not thread-safe)
# the body of a value that is one large binary: a reference to buffer 0 (what _walk makes)
_BUFREF_BODY = {t: msgpack.packb(msgpack.ExtType(EXT_BUFREF, msgpack.packb([0, k]))) for t, k in _BUF_KINDS.items()}


def encode(value: Any, *, threshold: int = BUFFER_THRESHOLD) -> tuple[bytes, list[Any]]:
    """Encode a value.

    Returns:
        ``(body, buffers)``: the msgpack body and the out-of-band buffers.

    Raises:
        CodecError: the value cannot be pickled.
    """
    # A large binary value goes straight to its buffer frame: the fast path below would copy it
    # into the packer (and the packer's buffer into the body) only to find the body too big
    # (~4 ms for 10 MB, half the mesh's overhead on a 10 MB result; NOTES-bigvalue2.md).
    kind = type(value)
    if kind in _BUF_KINDS and (value.nbytes if kind is memoryview else len(value)) >= threshold:
        return _BUFREF_BODY[kind], [value]
    # Fast path: a value of exact plain types (no tuple, no subclass, no ext) packs as it is, with
    # this thread's packer. A body under the threshold cannot hold a binary value that should have
    # been a buffer frame. Anything else (TypeError, OverflowError, too deep, big) takes the walk.
    # A large binary value one or two levels down in a short list / dict (``{"data": big}``, a
    # call's ``[[big], {}]``) is packed (copied twice) only to be thrown away: once that happened,
    # the next such values are scanned first for a while (_big_inside), and one that holds a large
    # binary value goes to the walk at once. Until then (most programs: never) nothing is scanned.
    if not _scan_left or (kind is not list and kind is not dict) or not _big_inside(value, threshold):
        try:
            body = _local.strict.pack(value)
        except AttributeError:
            _local.strict = msgpack.Packer(use_bin_type=True, strict_types=True)
            return encode(value, threshold=threshold)
        except (TypeError, ValueError, OverflowError):
            pass
        else:
            if len(body) < threshold:
                return body, []
            if kind is list or kind is dict:
                _arm_scan()
    buffers: list[Any] = []
    try:
        body = msgpack.packb(_walk(value, buffers, threshold), use_bin_type=True)
    except CodecError:
        raise
    except Exception as exc:
        raise CodecError(f"cannot encode {type(value).__name__}: {exc}") from exc
    return body, buffers


def _arm_scan() -> None:
    global _scan_left
    _scan_left = _SCAN_SPAN


def _big_inside(value: list | dict, threshold: int) -> bool:
    """A large bytes / bytearray / memoryview among the items of a short list or dict, or of a
    short list or dict among them (short: at most :data:`_SCAN_MAX` items; longer ones are not
    scanned and take the fast path as before). Each scan that finds none counts down the scans
    left (:data:`_scan_left`); one that finds one starts the span again."""
    global _scan_left
    items = value.values() if type(value) is dict else value
    if len(items) > _SCAN_MAX or not _has_big(items, threshold):
        _scan_left = max(_scan_left - 1, 0)  # (threads may race here: it only decides when to scan)
        return False
    _scan_left = _SCAN_SPAN
    return True


def _has_big(items: Any, threshold: int) -> bool:
    for x in items:
        t = type(x)
        if t is list or t is dict:
            inner = x.values() if t is dict else x
            if len(inner) <= _SCAN_MAX:
                for y in inner:
                    u = type(y)
                    if u in _BUF_KINDS and (y.nbytes if u is memoryview else len(y)) >= threshold:
                        return True
        elif t in _BUF_KINDS and (x.nbytes if t is memoryview else len(x)) >= threshold:
            return True
    return False


_SCAN_MAX = 16  # items of a list / dict scanned (at each of the two levels)
_SCAN_SPAN = 256  # list / dict values scanned after a large binary value was packed for nothing
_scan_left = 0  # scans left before the fast path packs without looking again


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
    used: set[int] | None = set() if bufs else None  # buffer indices referenced so far: each once only
    depth = 0  # ext values being decoded, nested

    def ext_hook(code: int, data: bytes) -> Any:
        # No try/finally around the depth: an error here ends the whole decode.
        nonlocal depth
        if depth >= MAX_EXT_DEPTH:
            raise CodecError(f"ext values nested more than {MAX_EXT_DEPTH} deep")
        if code == EXT_TUPLE:
            depth += 1
            items = _unpack(data, ext_hook)
            depth -= 1
            if type(items) is not list:
                raise CodecError("malformed tuple: not an array")
            return tuple(items)
        if code == EXT_BUFREF:
            ref = _unpack(data, None)
            if type(ref) is not list or len(ref) != 2 or ref[1] not in (0, 1, 2):
                raise CodecError(f"malformed buffer reference {ref!r:.80}")
            view = _take(bufs, used, ref[0])
            kind = ref[1]
            if kind == 2:
                return view
            return bytearray(view) if kind == 1 else bytes(view)
        if code == EXT_PICKLED:
            if not allow_pickle:
                raise CodecError("pickled values are not accepted from this peer")
            ref = _unpack(data, None)
            if type(ref) is not list or len(ref) != 2 or type(ref[1]) is not list:
                raise CodecError("malformed pickled value")
            payload, indices = ref
            oob = [_take(bufs, used, i) for i in indices]
            try:
                if _CP in sys.modules or type(payload) is not bytes or payload.find(_CP_MARK, 0, _CP_SCAN) < 0:
                    return pickle.loads(payload, buffers=oob)
                from transport._byvalue_load import load_value  # (a server has it already: its class loads)

                return load_value(payload, oob)  # made by cloudpickle: loaded without it if it can be
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
        if ext_hook is None:  # a payload that has no ext values inside: refuse any
            return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_no_ext)
        return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=ext_hook)
    except CodecError:
        raise
    except Exception as exc:  # msgpack raises ValueError, ExtraData, StackError, ...
        raise CodecError(f"malformed body: {type(exc).__name__}: {exc}") from None


def _no_ext(code: int, data: bytes) -> Any:
    raise CodecError(f"unexpected ext type {code} inside a buffer reference or pickle")


def _view(frame: Any) -> Any:
    buf = getattr(frame, "buffer", None)  # zmq.Frame
    return buf if buf is not None else frame


def _take(bufs: list[Any], used: set[int] | None, index: Any) -> Any:
    if type(index) is not int or not 0 <= index < len(bufs) or used is None:
        raise CodecError(f"buffer reference {index!r:.40} out of range ({len(bufs)} buffers)")
    if index in used:  # a small body must not make many copies of one large frame
        raise CodecError(f"buffer {index} is referenced twice")
    used.add(index)
    return bufs[index]


def _walk(obj: Any, bufs: list[Any], threshold: int, depth: int = 0) -> Any:
    t = type(obj)
    if t is str or t is float or t is bool or obj is None:
        return obj
    if t is int:
        return obj if _INT_MIN <= obj <= _INT_MAX else _pickled(obj, bufs, threshold)
    if t is list:
        if depth >= MAX_DEPTH:
            return _pickled(obj, bufs, threshold)
        depth += 1
        return [_walk(x, bufs, threshold, depth) for x in obj]
    if t is tuple:
        if depth >= MAX_DEPTH:
            return _pickled(obj, bufs, threshold)
        depth += 1
        return msgpack.ExtType(
            EXT_TUPLE,
            msgpack.packb([_walk(x, bufs, threshold, depth) for x in obj], use_bin_type=True),
        )
    if t is dict:
        if depth >= MAX_DEPTH or not all(type(k) is str or _plain_key(k) for k in obj):
            return _pickled(obj, bufs, threshold)
        depth += 1
        return {k: _walk(v, bufs, threshold, depth) for k, v in obj.items()}
    if t in _BUF_KINDS:
        size = obj.nbytes if t is memoryview else len(obj)
        if size >= threshold:
            bufs.append(obj)
            return msgpack.ExtType(EXT_BUFREF, msgpack.packb([len(bufs) - 1, _BUF_KINDS[t]]))
        return bytes(obj) if t is memoryview else obj
    return _pickled(obj, bufs, threshold)


def _plain_key(key: Any) -> bool:
    t = type(key)
    return t in _KEY_TYPES and (t is not int or _INT_MIN <= key <= _INT_MAX)


def _pickled(obj: Any, bufs: list[Any], threshold: int) -> msgpack.ExtType:
    try:
        payload, oob = _dumps(obj, threshold)
    except CodecError:
        raise
    except RecursionError as exc:  # the C pickler's; cloudpickle raises PicklingError for most of them
        raise CodecError(f"cannot pickle {type(obj).__name__}: nested too deeply") from exc
    except Exception as exc:
        if "recursion" in str(exc):
            raise CodecError(f"cannot pickle {type(obj).__name__}: nested too deeply ({exc})") from exc
        raise CodecError(f"cannot pickle {type(obj).__name__}: {exc}") from exc
    indices = list(range(len(bufs), len(bufs) + len(oob)))
    bufs.extend(oob)
    return msgpack.ExtType(EXT_PICKLED, msgpack.packb([payload, indices], use_bin_type=True))
