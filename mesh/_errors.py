"""Errors of the mesh.

The hierarchy::

    MeshError
    ├── RemoteError            the remote code raised; carries its type and traceback
    │   └── RemoteAttributeError   no such attribute on a remote object (also an AttributeError)
    ├── ServerUnavailable      the server cannot be reached or went away
    ├── CallTimeout            no result within the timeout (also a TimeoutError)
    │   └── DeadlineExceeded       the deadline of ``mesh.deadline()`` passed first
    ├── Cancelled              the task was cancelled (``.cancel()``, or its caller was)
    ├── ResultExpired          the producer no longer holds the value
    ├── MessageTooLarge        a message exceeds the server's size limit
    ├── AgentNotFound          no such object on that server
    ├── AuthenticationError    the shared secret is wrong or missing
    ├── SerializationError     a value cannot be sent (also a TypeError)
    ├── CheckpointError        a durable object's state cannot be saved or restored
    └── StateStoreError        the state store is down, or holds a corrupted or forged value
"""

from __future__ import annotations

import importlib
import sys
import threading
from typing import Any

__all__ = [
    "AgentNotFound",
    "AuthenticationError",
    "CallTimeout",
    "Cancelled",
    "CheckpointError",
    "DeadlineExceeded",
    "MeshError",
    "MessageTooLarge",
    "RemoteAttributeError",
    "RemoteError",
    "ResultExpired",
    "OutcomeUnknown",
    "SerializationError",
    "ServerUnavailable",
    "StateStoreError",
]


class MeshError(Exception):
    """Base of every error the mesh raises."""


class RemoteError(MeshError):
    """The remote call raised.

    When the caller can find the remote exception's class (see :func:`remote_error`), the
    error is also an instance of it: ``except ValueError`` catches a remote ``ValueError``.

    Attributes:
        remote_type: the name of the remote exception's type, e.g. ``"ValueError"``.
        remote_traceback: the remote traceback, as text.
        remote_class: the remote type as ``module:qualname`` (``""`` if the server did not say).
    """

    def __init__(self, remote_type: str, message: str, remote_traceback: str = "", remote_class: str = "") -> None:
        self.remote_type = remote_type
        self.remote_message = message
        self.remote_traceback = remote_traceback
        self.remote_class = remote_class
        text = f"{remote_type}: {message}"
        if remote_traceback:
            text += "\n\nremote traceback:\n```\n" + remote_traceback.rstrip() + "\n```"
        try:
            super().__init__(text)
        except TypeError:  # a mixed-in class whose __init__ wants its own arguments (json's JSONDecodeError)
            Exception.__init__(self, text)

    def __reduce__(self):  # keep the fields when pickled (e.g. forwarded as a result)
        fields = (self.remote_type, self.remote_message, self.remote_traceback, self.remote_class)
        if type(self) in _typed.values():  # made at run time: rebuilt by class name where it lands
            return (remote_error, fields)
        return (type(self), fields)

    __str__ = Exception.__str__  # not the mixed-in class's (KeyError's would quote the text)


_typed: dict[type, type] = {}  # remote exception class -> its RemoteError subclass (made once per class)
_typed_lock = threading.Lock()


def remote_error(
    remote_type: str, message: str, remote_traceback: str = "", remote_class: str = "", may_import: bool = False,
) -> RemoteError:
    """The ``RemoteError`` for a remote exception: an instance of its class too, when that can be.

    ``remote_class`` (``module:qualname``, sent by the server) is looked up in modules this
    process has already imported (``sys.modules``, builtins included). With ``may_import`` (the
    error came in the reply to a call, from a peer whose results this process unpickles anyway,
    so an import gives it nothing it did not have) a module not imported yet is imported if it
    can be; admin replies (ping, status, list) never import. A class that is found, derives from
    ``Exception`` and mixes with ``RemoteError`` gives ``class RemoteValueError(RemoteError,
    ValueError)``, made once per class; anything else gives a plain ``RemoteError``.
    """
    cls = _find_class(remote_class, may_import)
    sub = _typed_class(cls) if cls is not None else None
    if sub is not None:
        try:
            return sub(remote_type, message, remote_traceback, remote_class)
        except Exception:  # noqa: BLE001 - its constructor chain refuses one text argument
            pass
    return RemoteError(remote_type, message, remote_traceback, remote_class)


def _find_class(ref: str, may_import: bool = False) -> type | None:
    module_name, _, qualname = ref.partition(":")
    obj = sys.modules.get(module_name) if module_name and qualname else None
    if obj is None and may_import and qualname:
        obj = _import(module_name)
    for part in qualname.split(".") if obj is not None else ():
        obj = getattr(obj, part, None)
    # StopIteration would turn into RuntimeError when raised inside a coroutine (an await)
    if (isinstance(obj, type) and issubclass(obj, Exception)
            and not issubclass(obj, (RemoteError, StopIteration, StopAsyncIteration))):
        return obj
    return None


def _typed_class(cls: type) -> type | None:
    sub = _typed.get(cls, _UNSET)
    if sub is not _UNSET:
        return sub
    try:
        sub = type(f"Remote{cls.__name__}", (RemoteError, cls), {"__module__": __name__, "__qualname__": f"Remote{cls.__name__}"})
        sub("T", "probe")  # it builds (an __init__ that wants other arguments is skipped: RemoteError.__init__)
    except Exception:  # noqa: BLE001 - a layout conflict, a metaclass, an __init_subclass__ that refuses
        sub = None
    with _typed_lock:
        return _typed.setdefault(cls, sub)


_UNSET: object = object()
_unimportable: set[str] = set()  # modules whose import failed once: not tried again


def _import(module_name: str) -> Any:
    """The module, imported now if it can be (a dotted name of identifiers), else ``None``."""
    if module_name in _unimportable or len(module_name) > 200 or not all(
            part.isidentifier() for part in module_name.split(".")):
        return None
    try:
        return importlib.import_module(module_name)
    except (Exception, SystemExit):  # noqa: BLE001 - not installed here, or its import fails
        if len(_unimportable) < 1024:
            _unimportable.add(module_name)
        return None


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


class DeadlineExceeded(CallTimeout):
    """The deadline set with ``mesh.deadline()`` passed before the task ended (also a ``CallTimeout``)."""


class Cancelled(MeshError):
    """The task was cancelled: ``.cancel()`` on its future, or the call that made it was cancelled.

    ``mesh.check_cancelled()`` raises it inside a method whose call was cancelled.
    """


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


class CheckpointError(MeshError):
    """A durable object's state could not be checkpointed (it cannot be pickled, or its
    ``state_dict()`` raised) or restored (``load_state_dict()`` raised); the message names the
    object. The previous checkpoint stays."""


class StateStoreError(MeshError):
    """The state store of durable agents cannot be used (down, refusing), or holds a corrupted,
    truncated or forged value; the message names the object and the store."""
