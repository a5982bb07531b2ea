"""Multipart framing of mesh messages.

Every mesh message is one ZeroMQ multipart message. A ROUTER socket sees the
peer's routing identity first; a DEALER never does.

======  ===========================  ==========================================
frame   content                      notes
======  ===========================  ==========================================
(0)     routing identity             ROUTER side only, added/stripped by ZeroMQ
0       ``b"AMSH" + bytes([major])`` signature; a wrong major gets an error reply
1       header, msgpack map          ``op``, ``id`` and op-specific keys
2       body, msgpack                the value, see :mod:`transport._codec`
3..n    raw buffers                  large binary values, referenced by index
======  ===========================  ==========================================

The header is a small msgpack map with string keys. Receivers ignore keys
they do not know (minor, additive protocol changes); a change that breaks old
peers bumps ``PROTOCOL_MAJOR``. ``transport/PROTOCOL.md`` is the full spec.
"""

from __future__ import annotations

from typing import Any

import threading

import msgpack

from transport._errors import FrameError, VersionMismatch

__all__ = [
    "PROTOCOL_MAJOR",
    "PROTOCOL_MINOR",
    "SIGNATURE",
    "BATCH",
    "BATCH_BYTES",
    "BATCH_MAX",
    "BATCH_PROPERTY",
    "FrameError",
    "VersionMismatch",
    "pack_batch",
    "ONE_HEAD",
    "ONE_MAX",
    "pack_header",
    "pack_one",
    "split_batch",
    "split_frames",
    "split_one",
]

PROTOCOL_MAJOR = 1  # wire value, bump only for incompatible changes
PROTOCOL_MINOR = 0  # additive changes
SIGNATURE = b"AMSH" + bytes([PROTOCOL_MAJOR])

# A header is small; anything bigger is hostile or broken.
MAX_HEADER_BYTES = 64 * 1024
_local = threading.local()

# A batch (1.4): many messages without buffer frames in one ZeroMQ message, header ``{"op": "batch"}``,
# body a msgpack array ``[header 1 (map), body 1 (bin), header 2, body 2, ...]``. See PROTOCOL.md.
BATCH = "batch"
BATCH_MAX = 1024  # messages in one batch, at most (a receiver refuses more)
BATCH_BYTES = 1 << 20  # a sender's bound on a batch's body (a server announces its own, maybe smaller)
BATCH_ITEM_MAX = 64 * 1024  # a message whose header + body is larger goes on its own
BATCH_HEADER = msgpack.packb({"op": BATCH}, use_bin_type=True)
# A server that reads batches says so in the ZMTP handshake: this metadata property, the most bytes
# of a batch body it reads (so no message of the protocol changes for a peer that does not look)
BATCH_PROPERTY = "X-Mesh-Batch"

# A one-frame message (1.5): the signature, the header's length (2 bytes, big-endian), the header,
# then the body, all in one ZeroMQ frame and nothing after it (no buffers). Three frames in one for
# the small calls that are most of the traffic: each frame costs a send and a receive at both ends.
# A server answers a one-frame request in one frame or in three; a client sends one only where a
# reply in one frame may come back (see PROTOCOL.md, "One-frame messages").
ONE_HEAD = len(SIGNATURE) + 2  # the bytes before the header
ONE_MAX = 1024  # a sender's bound on a one-frame message (libzmq applies a server's limit per frame)


def pack_one(header: bytes, body: bytes) -> bytes:
    """A one-frame message of a packed ``header`` and ``body`` (header under 64 KiB)."""
    return SIGNATURE + len(header).to_bytes(2, "big") + header + body


def split_one(frame: bytes) -> tuple[bytes, bytes] | None:
    """The packed header and the body of a one-frame message; None if ``frame`` is not one (another
    signature, a length past its end, or no body)."""
    end = ONE_HEAD + int.from_bytes(frame[len(SIGNATURE):ONE_HEAD], "big")
    if len(frame) <= end or frame[:len(SIGNATURE)] != SIGNATURE:
        return None
    return frame[ONE_HEAD:end], frame[end:]


def pack_header(header: dict[str, Any]) -> bytes:
    """Encode a header map (with this thread's packer: a Packer is not thread-safe)."""
    try:
        return _local.packer.pack(header)
    except AttributeError:
        _local.packer = msgpack.Packer(use_bin_type=True)
        return _local.packer.pack(header)


def split_frames(frames: list[Any]) -> tuple[dict[str, Any], Any, list[Any]]:
    """Check and split ``[signature, header, body, *buffers]``.

    Args:
        frames: the frames after any routing identity (bytes or zmq.Frame).

    Returns:
        ``(header, body_bytes, buffers)``; the body stays encoded.

    Raises:
        VersionMismatch: the signature names another major version.
        FrameError: anything else malformed.
    """
    if len(frames) < 3:
        raise FrameError(f"expected at least 3 frames, got {len(frames)}")
    sig, raw = frames[0], frames[1]
    if type(sig) is not bytes:  # (read as bytes on the hot paths: no call to convert them)
        sig = _as_bytes(sig)
    if sig != SIGNATURE:
        if len(sig) == 5 and sig[:4] == b"AMSH":
            raise VersionMismatch(sig[4], PROTOCOL_MAJOR)
        raise FrameError("bad signature frame: not a mesh peer")
    return _header(raw if type(raw) is bytes else _as_bytes(raw)), frames[2], list(frames[3:]) if len(frames) > 3 else []


def _header(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_HEADER_BYTES:
        raise FrameError(f"header of {len(raw)} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        header = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise FrameError(f"undecodable header: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("op"), str):
        raise FrameError("header is not a map with a string 'op'")
    return header


def pack_batch(parts: list[Any]) -> bytes:
    """The body of a batch from ``[header 1, body 1, header 2, body 2, ...]``, each already encoded.

    The encoded headers (msgpack maps) are spliced in as they are, each body as a bin, so the
    receiver decodes every header of the batch in one ``unpackb``.
    """
    n = len(parts)
    out: list[Any] = [bytes((0x90 | n,)) if n < 16 else b"\xdc" + n.to_bytes(2, "big")]
    heads = _BIN_HEADS
    for i in range(0, n, 2):
        body = parts[i + 1]
        size = len(body)
        out.append(parts[i])
        out.append(heads[size] if size < 256 else (b"\xc5" + size.to_bytes(2, "big") if size < 65536 else b"\xc6" + size.to_bytes(4, "big")))
        out.append(body)
    return b"".join(out)


_BIN_HEADS = [b"\xc4" + bytes((i,)) for i in range(256)]


def split_batch(body: Any) -> list[tuple[dict[str, Any], bytes] | FrameError]:
    """The messages of a batch's body: ``(header, body)`` each, or the :class:`FrameError` of an
    item that is malformed (one bad item fails only itself).

    Raises:
        FrameError: the body is not one msgpack array of (header map, body bin) pairs, at most
            ``BATCH_MAX`` of them, without extension types.
    """
    data = _as_bytes(body)
    try:
        parts = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False, ext_hook=_no_ext)
    except Exception as exc:  # msgpack raises several unrelated types
        raise FrameError(f"undecodable batch: {type(exc).__name__}: {exc}") from None
    if type(parts) is not list or len(parts) % 2 or len(parts) > 2 * BATCH_MAX:
        raise FrameError("a batch is not an array of at most 1024 (header, body) pairs")
    out: list[tuple[dict[str, Any], bytes] | FrameError] = []
    for i in range(0, len(parts), 2):
        header, item = parts[i], parts[i + 1]
        if type(header) is not dict or type(header.get("op")) is not str:
            out.append(FrameError("header is not a map with a string 'op'"))
        elif type(item) is not bytes:
            out.append(FrameError("a body in a batch is not a bin"))
        elif header["op"] == BATCH:
            out.append(FrameError("a batch inside a batch"))
        else:
            out.append((header, item))
    return out


def _no_ext(code: int, data: bytes) -> Any:
    raise FrameError(f"ext type {code} in a batch")


def _as_bytes(frame: Any) -> bytes:
    if isinstance(frame, bytes):
        return frame
    return frame.bytes  # zmq.Frame
