"""Replies, caller side: decode an ``ok``, raise the error an ``err`` describes (by its kind,
named in ``mesh._core.wire``), translate transport failures into ``MeshError``, and wait."""

from __future__ import annotations

import concurrent.futures
import errno
import resource
import time
from concurrent.futures import Future
from typing import Any

import msgpack
import zmq

import transport
from mesh._core import wire
from mesh._core.context import blocking
from mesh._errors import (
    AgentNotFound,
    AuthenticationError,
    CallTimeout,
    Cancelled,
    DeadlineExceeded,
    MeshError,
    MessageTooLarge,
    OutcomeUnknown,
    RemoteError,
    ResultExpired,
    ServerUnavailable,
    remote_error,
)

__all__ = ["decode_plain", "decode_reply", "interrupted", "raise_error", "set_interrupt_hook", "translate", "wait"]

_MAX_PLAIN = 1 << 20  # bytes: a ping or status reply larger than this is malformed
_interrupt_hook: list[Any] = []  # set by mesh.client._cancel: runs when a wait is interrupted by Ctrl-C


def set_interrupt_hook(fn: Any) -> None:
    """``fn()`` runs when Ctrl-C interrupts a wait on a mesh future (it cancels what this process started)."""
    _interrupt_hook[:] = [fn]


def interrupted() -> None:
    """A wait was interrupted by Ctrl-C (``KeyboardInterrupt``): run the hook."""
    for fn in _interrupt_hook:
        fn()

# error kind -> the exception a caller gets (``None``: a MeshError naming the kind). Every kind of
# wire.KINDS is listed (tests/test_layers.py holds this table against it).
KIND_ERRORS: dict[str, type[MeshError] | None] = {
    wire.K_REMOTE: RemoteError,
    wire.K_NOTFOUND: AgentNotFound,
    wire.K_EXPIRED: ResultExpired,
    wire.K_TOOLARGE: MessageTooLarge,
    wire.K_UNAVAILABLE: ServerUnavailable,
    wire.K_NEEDCLASS: None,  # handled by placement (sends the class by value); otherwise a bug
    wire.K_EXISTS: None,
    wire.K_BADREQUEST: None,
    wire.K_PROTOCOL: None,
    wire.K_INTERNAL: None,  # a server bug: see raise_error
    wire.K_CANCELLED: Cancelled,
    wire.K_DEADLINE: DeadlineExceeded,
}


def raise_error(header: dict, address: str, may_import: bool = True) -> None:
    """Raise the error that an ``err`` reply describes (``may_import``: see ``mesh._errors.remote_error``)."""
    kind = header.get("kind", wire.K_REMOTE)
    msg = str(header.get("msg", ""))
    if kind == wire.K_REMOTE:
        raise remote_error(str(header.get("type", "Exception")), msg, str(header.get("tb", "")), str(header.get("etype", "")),
                           may_import)
    if kind == wire.K_INTERNAL:
        raise MeshError(
            f"{address}: internal error: a bug in the server (its log has the traceback), not in this call: {msg}"
        )
    cls = KIND_ERRORS.get(kind)
    if cls is not None:
        raise cls(f"{address}: {msg}")
    raise MeshError(f"{address}: {kind}: {msg}")


def decode_reply(reply: tuple, address: str) -> Any:
    """Value of an ``ok`` reply, or raise the error of an ``err`` reply."""
    header, body, buffers = reply
    if header.get("op") == wire.ERR:
        raise_error(header, address)
    try:
        return transport.decode(body, buffers)
    except transport.CodecError as exc:
        raise MeshError(f"cannot decode the reply from {address}: {exc}") from exc


def decode_plain(reply: tuple, address: str) -> Any:
    """The value of an admin reply (ping, status, stop) as plain msgpack: no pickle, no extension type.

    Raises:
        MeshError: the reply is an error, or is not plain data (a rogue or broken server).
    """
    header, body, buffers = reply
    if header.get("op") == wire.ERR:
        raise_error(header, address, may_import=False)  # nothing that only lists or pings runs a peer's say-so
    if buffers:
        raise MeshError(f"{address}: malformed reply: unexpected extra frames")
    data = getattr(body, "buffer", body)  # zmq.Frame

    def refuse(code: int, _data: bytes) -> Any:
        raise MeshError(f"{address}: malformed reply: extension type {code} where plain data was expected "
                        "(pickles are never accepted in admin replies)")

    try:
        if len(data) > _MAX_PLAIN:
            raise ValueError(f"{len(data)} bytes")
        return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=refuse)
    except MeshError:
        raise
    except Exception as exc:
        raise MeshError(f"{address}: malformed reply: {type(exc).__name__}: {exc}") from None


def translate(exc: BaseException) -> BaseException:
    """Map a transport failure onto the mesh's errors."""
    if isinstance(exc, MeshError):
        return exc
    if isinstance(exc, transport.PeerAuthFailed):
        return AuthenticationError(str(exc))
    if isinstance(exc, transport.RequestTimeout):
        return CallTimeout(str(exc))
    if isinstance(exc, transport.PeerLost):
        return OutcomeUnknown(str(exc))
    if isinstance(exc, transport.PeerUnavailable):
        return ServerUnavailable(str(exc))
    if isinstance(exc, transport.NodeClosed):
        return ServerUnavailable("the mesh client was shut down (mesh.shutdown())")
    if isinstance(exc, transport.CodecError):
        return MeshError(f"cannot decode the reply: {exc}")
    if isinstance(exc, (zmq.ZMQError, transport.TransportError)):
        return _resource_error(exc)
    return exc


def _resource_error(exc: BaseException) -> MeshError:
    """A socket error reaching the user (e.g. EMFILE): a MeshError that says which limit was hit."""
    code = getattr(exc, "errno", None)
    if code == errno.EMFILE or "Too many open files" in str(exc):
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return MeshError(
            f"this process hit its limit of open files ({soft}, ulimit -n; each server connection uses a few): {exc}"
        )
    if isinstance(exc, transport.TransportError):
        return ServerUnavailable(str(exc))
    return MeshError(f"{type(exc).__name__}: {exc}")


def wait(fut: Future, deadline: float | None, address: str) -> tuple:
    """Wait for a transport future (telling the server we block), translating errors.

    Raises:
        CallTimeout: ``deadline`` (monotonic) passed first.
        MeshError: the transport failure, translated.
    """
    if not fut.done():
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        with blocking():
            try:
                return fut.result(remaining)
            except (concurrent.futures.TimeoutError, transport.FutureTimeout):
                raise CallTimeout(
                    f"no result from {address} within the timeout "
                    "(the task may still be running; ask again to keep waiting)"
                ) from None
            except KeyboardInterrupt:
                interrupted()  # Ctrl-C: what this process started is cancelled
                raise
            except BaseException as exc:
                raise translate(exc) from None
    try:
        return fut.result()
    except BaseException as exc:
        raise translate(exc) from None
