"""The reply entries of a call: its value encoded, or its error with the exception's kind and class;
and the check that a sync method's result can travel (not a coroutine or a generator)."""

from __future__ import annotations

import sys
import traceback
import types
from typing import Any

import transport
from mesh._core import wire
from mesh._core.wire import Entry
from mesh._errors import Cancelled, DeadlineExceeded, RemoteError, ResultExpired, ServerUnavailable

__all__ = ["call_error", "checked_value", "ok", "remote_error", "result_of"]


def ok(value: Any) -> Entry:
    try:
        body, buffers = transport.encode(value)
    except transport.CodecError as exc:
        return wire.err_entry(wire.K_REMOTE, f"the result cannot be sent back: {exc}", "SerializationError")
    return {"op": wire.OK}, body, [b if type(b) is bytes else bytes(b) for b in buffers]


def checked_value(label: str, value: Any) -> Any:
    """``value`` if it can be a call's result; a coroutine or an async generator (which cannot
    travel, and would fail as a pickling error) raises ``TypeError`` naming the method."""
    kind = type(value)
    if kind is types.CoroutineType:
        value.close()  # never awaited: no "was never awaited" warning on top of the error
        raise TypeError(f"{label} returned a coroutine: define it with async def, or await it")
    if kind is types.AsyncGeneratorType:
        raise TypeError(f"{label} is an async generator: async generator methods need @mesh.stream_func (a proxy then returns a Stream)")
    if kind is types.GeneratorType:
        value.close()
        raise TypeError(f"{label} returned a generator: generator methods need @mesh.stream_func (a proxy then returns a Stream)")
    aio = sys.modules.get("asyncio")
    if aio is not None and isinstance(value, aio.Future):
        raise TypeError(f"{label} returned an asyncio future: define it with async def, and await it")
    return value


_SUSPECT = (types.CoroutineType, types.AsyncGeneratorType, types.GeneratorType)


def result_of(cls: type, method: str, value: Any) -> Any:
    """:func:`checked_value` of a sync method's result, its label made only when it is refused."""
    if type(value) in _SUSPECT:
        return checked_value(f"{cls.__name__}.{method}", value)
    aio = sys.modules.get("asyncio")
    if aio is not None and isinstance(value, aio.Future):
        return checked_value(f"{cls.__name__}.{method}", value)
    return value


def remote_error(exc: BaseException) -> Entry:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return _typed(wire.err_entry(wire.K_REMOTE, str(exc), type(exc).__name__, tb), type(exc))


def _typed(entry: Entry, cls: type | str) -> Entry:
    """Add ``etype`` (the exception's class as ``module:qualname``): the caller may raise it as that type."""
    etype = cls if isinstance(cls, str) else f"{cls.__module__}:{cls.__qualname__}"
    if etype and len(etype) <= 1024:
        entry[0]["etype"] = etype
    return entry


def call_error(exc: BaseException) -> Entry:
    """The reply for a method that raised: mesh errors from further down a call chain keep their kind.

    A ``RemoteError`` keeps the type, message and traceback of where it started;
    ``ResultExpired`` and ``ServerUnavailable`` (a future the method read, or a
    server it called) reach the caller as themselves, not wrapped.
    """
    if isinstance(exc, RemoteError):
        here = "".join(traceback.format_tb(exc.__traceback__))
        tb = exc.remote_traceback.rstrip() + "\n\nre-raised on the way back:\n" + here
        return _typed(wire.err_entry(wire.K_REMOTE, exc.remote_message, exc.remote_type, tb), exc.remote_class)
    if isinstance(exc, (Cancelled, DeadlineExceeded)):  # check_cancelled(), or a cancelled call it read
        kind = wire.K_DEADLINE if isinstance(exc, DeadlineExceeded) else wire.K_CANCELLED
        return wire.err_entry(kind, str(exc), type(exc).__name__, "".join(traceback.format_exception(exc)))
    if isinstance(exc, ResultExpired):
        return wire.err_entry(wire.K_EXPIRED, str(exc), "ResultExpired", "".join(traceback.format_exception(exc)))
    if isinstance(exc, ServerUnavailable):
        return wire.err_entry(wire.K_UNAVAILABLE, str(exc), "ServerUnavailable", "".join(traceback.format_exception(exc)))
    return remote_error(exc)
