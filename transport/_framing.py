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

import msgpack

from transport._errors import FrameError, VersionMismatch

__all__ = [
    "PROTOCOL_MAJOR",
    "PROTOCOL_MINOR",
    "SIGNATURE",
    "FrameError",
    "VersionMismatch",
    "pack_header",
    "split_frames",
]

PROTOCOL_MAJOR = 1  # wire value, bump only for incompatible changes
PROTOCOL_MINOR = 0  # additive changes
SIGNATURE = b"AMSH" + bytes([PROTOCOL_MAJOR])

# A header is small; anything bigger is hostile or broken.
MAX_HEADER_BYTES = 64 * 1024


def pack_header(header: dict[str, Any]) -> bytes:
    """Encode a header map."""
    return msgpack.packb(header, use_bin_type=True)


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
    sig = _as_bytes(frames[0])
    if sig != SIGNATURE:
        if len(sig) == 5 and sig[:4] == b"AMSH":
            raise VersionMismatch(sig[4], PROTOCOL_MAJOR)
        raise FrameError("bad signature frame: not a mesh peer")
    raw = _as_bytes(frames[1])
    if len(raw) > MAX_HEADER_BYTES:
        raise FrameError(f"header of {len(raw)} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        header = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise FrameError(f"undecodable header: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("op"), str):
        raise FrameError("header is not a map with a string 'op'")
    return header, frames[2], list(frames[3:])


def _as_bytes(frame: Any) -> bytes:
    if isinstance(frame, bytes):
        return frame
    return frame.bytes  # zmq.Frame
