"""ZeroMQ transport of the mesh: framing, codec, security and the I/O thread.

Knows nothing of agents: ``mesh`` builds on it, never the reverse.
"""

from transport._codec import BUFFER_THRESHOLD, decode, encode
from transport._errors import (
    CodecError,
    FrameError,
    FutureTimeout,
    NodeClosed,
    PeerAuthFailed,
    PeerLost,
    PeerUnavailable,
    RequestTimeout,
    TransportError,
    Untransferable,
    VersionMismatch,
)
from transport._framing import PROTOCOL_MAJOR, PROTOCOL_MINOR, SIGNATURE
from transport._future import ReplyFuture
from transport._node import Node, Router
from transport._peer import PendingReply
from transport._security import Keys, derive_keys, read_secret_file, secret_from_env
from transport._templates import map_prefix, ok_header, pack_plain, pack_str, pack_uint

__all__ = [
    "BUFFER_THRESHOLD",
    "PROTOCOL_MAJOR",
    "PROTOCOL_MINOR",
    "SIGNATURE",
    "CodecError",
    "FrameError",
    "FutureTimeout",
    "Keys",
    "Node",
    "NodeClosed",
    "PeerAuthFailed",
    "PeerLost",
    "PeerUnavailable",
    "PendingReply",
    "ReplyFuture",
    "RequestTimeout",
    "Router",
    "TransportError",
    "Untransferable",
    "VersionMismatch",
    "decode",
    "derive_keys",
    "encode",
    "map_prefix",
    "ok_header",
    "pack_plain",
    "pack_str",
    "pack_uint",
    "read_secret_file",
    "secret_from_env",
]
