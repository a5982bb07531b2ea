"""A handler's exception across workers: a dict on the wire, a ``mesh.RemoteError`` at the caller."""

from __future__ import annotations

import asyncio
import sys
import traceback
from typing import Any

import mesh

__all__ = ["error_dict", "rebuild_error"]

_MAX_TEXT = 64 * 1024
CANCELLED = {"type": "asyncio.CancelledError", "message": "cancelled", "traceback": ""}


def error_dict(exc: BaseException) -> dict[str, str]:
    cls = exc.__class__
    return {
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "message": str(exc)[:_MAX_TEXT],
        "traceback": "".join(traceback.format_exception(exc))[-_MAX_TEXT:],
    }


_error_classes: dict[type, type] = {}


def _importable(module: str, qualname: str) -> Any:
    # Only modules this process has imported already: a peer must never make us import one.
    try:
        obj: Any = sys.modules.get(module or "builtins")
        if obj is None:
            return None
        for part in qualname.split("."):
            obj = getattr(obj, part)
        return obj
    except Exception:
        return None


def rebuild_error(error: Any) -> BaseException:
    """A handler's exception, raised in the caller: a ``mesh.RemoteError`` that is also an instance of the
    handler's exception class when that class can be imported here (``except ValueError`` works)."""
    try:
        type_name, message, tb = str(error["type"]), str(error["message"]), str(error.get("traceback", ""))
    except Exception:
        return mesh.RemoteError("Exception", "malformed error from a peer")
    if type_name == "asyncio.CancelledError":
        return asyncio.CancelledError(message)
    module, _, qualname = type_name.rpartition(".")
    cls = _importable(module, qualname)
    short = qualname.rpartition(".")[2] or type_name
    if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, mesh.RemoteError):
        combined = _error_classes.get(cls)
        if combined is None:
            try:
                combined = type(f"Remote{cls.__name__}", (mesh.RemoteError, cls), {"__module__": "mesh.autogen"})
            except TypeError:
                combined = mesh.RemoteError
            _error_classes[cls] = combined
        try:
            return combined(short, message, tb)
        except Exception:
            pass
    return mesh.RemoteError(short, message, tb)
