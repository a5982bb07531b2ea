"""Every error the transport raises, in one tree.

::

    Exception
    ├── TransportError                 a request failed (its future or call raises it)
    │   ├── PeerUnavailable            the peer cannot be reached: the request cannot have run
    │   │   └── PeerLost               the connection went while it was out: it may have run
    │   ├── PeerAuthFailed             the security handshake failed (wrong or missing secret)
    │   ├── RequestTimeout             no reply within the deadline (also a TimeoutError)
    │   └── NodeClosed                 the node was closed while the request was pending
    ├── ValueError
    │   ├── CodecError                 a value that cannot be encoded or a body that cannot be decoded
    │   │   └── Untransferable         the value holds a lock, socket, file... (names the path to it)
    │   └── FrameError                 a multipart message that does not follow the framing
    │       └── VersionMismatch        the peer speaks another major version of the protocol
    └── TimeoutError
        └── FutureTimeout              ``ReplyFuture.result(timeout)`` stopped waiting (the request lives on)

``CodecError`` and ``FrameError`` are about bytes, not about peers, so they stay
``ValueError`` s outside ``TransportError``; a ``FutureTimeout`` is the caller's own
wait ending, not a failure of the request.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CodecError",
    "FrameError",
    "FutureTimeout",
    "NodeClosed",
    "PeerAuthFailed",
    "PeerLost",
    "PeerUnavailable",
    "RequestTimeout",
    "TransportError",
    "Untransferable",
    "VersionMismatch",
]


class TransportError(Exception):
    """Base of transport failures."""


class PeerUnavailable(TransportError):
    """The peer cannot be reached, or went away before replying."""

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(f"{endpoint}: {reason}")
        self.endpoint = endpoint
        self.reason = reason


class PeerLost(PeerUnavailable):
    """The connection went while the request was out: the peer may have run it (outcome unknown)."""


class PeerAuthFailed(TransportError):
    """The security handshake with the peer failed (wrong or missing secret)."""

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(f"{endpoint}: {reason}")
        self.endpoint = endpoint


class RequestTimeout(TransportError, TimeoutError):
    """No reply within the request's deadline."""


class NodeClosed(TransportError):
    """The node was closed while the request was pending."""


class CodecError(ValueError):
    """A body that cannot be encoded or decoded."""


class Untransferable(CodecError):
    """A value holds something that cannot travel to another process.

    Attributes:
        what: what it is, e.g. ``"an open file"``.
        obj: the object itself.
    """

    def __init__(self, what: str, obj: Any) -> None:
        super().__init__(f"{what} ({type(obj).__module__}.{type(obj).__qualname__}) cannot travel to another process")
        self.what = what
        self.obj = obj


class FrameError(ValueError):
    """A multipart message that does not follow the mesh framing."""


class VersionMismatch(FrameError):
    """The peer speaks another major version of the protocol."""

    def __init__(self, theirs: int, ours: int) -> None:
        super().__init__(f"peer speaks mesh protocol version {theirs}, this peer speaks {ours}")
        self.theirs = theirs


class FutureTimeout(TimeoutError):
    """``result(timeout)`` passed its timeout."""
