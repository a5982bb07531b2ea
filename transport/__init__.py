"""ZeroMQ transport of the mesh: framing, codec, security and the I/O thread.

Knows nothing of agents: ``mesh`` builds on it, never the reverse.
"""

from transport._codec import BUFFER_THRESHOLD, CodecError, Untransferable, decode, encode
from transport._future import FutureTimeout, ReplyFuture
from transport._framing import PROTOCOL_MAJOR, PROTOCOL_MINOR, SIGNATURE, FrameError, VersionMismatch
from transport._node import (
    Node,
    NodeClosed,
    PeerAuthFailed,
    PeerLost,
    PeerUnavailable,
    RequestTimeout,
    Router,
    TransportError,
)
from transport._security import Keys, derive_keys, read_secret_file, secret_from_env

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
    "ReplyFuture",
    "RequestTimeout",
    "Router",
    "TransportError",
    "Untransferable",
    "VersionMismatch",
    "decode",
    "derive_keys",
    "encode",
    "read_secret_file",
    "secret_from_env",
]
