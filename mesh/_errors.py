"""Errors of the mesh.

The hierarchy::

    MeshError
    ├── RemoteError            the remote code raised; carries its type and traceback
    │   └── RemoteAttributeError   no such attribute on a remote object (also an AttributeError)
    ├── ServerUnavailable      the server cannot be reached or went away
    ├── CallTimeout            no result within the timeout (also a TimeoutError)
    ├── ResultExpired          the producer no longer holds the value
    ├── MessageTooLarge        a message exceeds the server's size limit
    ├── AgentNotFound          no such object on that server
    ├── AuthenticationError    the shared secret is wrong or missing
    └── SerializationError     a value cannot be sent (also a TypeError)
"""

from __future__ import annotations

__all__ = [
    "AgentNotFound",
    "AuthenticationError",
    "CallTimeout",
    "MeshError",
    "MessageTooLarge",
    "RemoteAttributeError",
    "RemoteError",
    "ResultExpired",
    "OutcomeUnknown",
    "SerializationError",
    "ServerUnavailable",
]


class MeshError(Exception):
    """Base of every error the mesh raises."""


class RemoteError(MeshError):
    """The remote call raised.

    Attributes:
        remote_type: the name of the remote exception's type, e.g. ``"ValueError"``.
        remote_traceback: the remote traceback, as text.
    """

    def __init__(self, remote_type: str, message: str, remote_traceback: str = "") -> None:
        self.remote_type = remote_type
        self.remote_message = message
        self.remote_traceback = remote_traceback
        text = f"{remote_type}: {message}"
        if remote_traceback:
            text += "\n\nremote traceback:\n```\n" + remote_traceback.rstrip() + "\n```"
        super().__init__(text)

    def __reduce__(self):  # keep the fields when pickled (e.g. forwarded as a result)
        return (type(self), (self.remote_type, self.remote_message, self.remote_traceback))


class RemoteAttributeError(RemoteError, AttributeError):
    """A remote object has no such attribute: a ``RemoteError`` that is also an
    ``AttributeError``, so ``hasattr`` and ``getattr(proxy, name, default)`` work."""


class ServerUnavailable(MeshError):
    """The server cannot be reached, or died before answering."""


class OutcomeUnknown(ServerUnavailable):
    """The connection to the server was lost after the call was sent: it may have run.

    A plain :class:`ServerUnavailable` means the call cannot have run (it was never
    sent); retrying after this one may apply the call twice. An async call's future
    can be read again once the server is back: it then fetches the result if the
    server holds it.
    """


class CallTimeout(MeshError, TimeoutError):
    """No result arrived within the timeout."""


class ResultExpired(MeshError):
    """The producer no longer holds the result (expired or evicted before it was fetched)."""


class MessageTooLarge(MeshError):
    """A message is larger than the receiving server accepts."""


class AgentNotFound(MeshError):
    """The server holds no object with that id (deleted, never created, or server restarted)."""


class AuthenticationError(MeshError):
    """The security handshake failed: the shared secret is wrong or missing."""


class SerializationError(MeshError, TypeError):
    """A value cannot be sent: it holds something that cannot travel to another process
    (an open file, a lock, a socket...), or it cannot be encoded at all."""
