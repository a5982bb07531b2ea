"""A class pickled by value: made once per class, its module pickled by value meanwhile, sent as a
fallback with a first creation; and keeping its source file names, so remote tracebacks name them.

cloudpickle (3.1) replaces every ``co_filename`` of code it pickles by value with
``"<dynamic-code>"`` (for deterministic payloads); a user's traceback from a class defined in a
script or a function then says ``File "<dynamic-code>", line 12``. The file name costs a few bytes
per function and is what users read (issue 12: "the remote traceback naming the user's real file
and line even for classes sent by value").
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import sys
import threading
import types
import weakref
from collections import ChainMap
from collections.abc import Iterator
from typing import Any

import cloudpickle
from cloudpickle import cloudpickle as _cp

from mesh._errors import SerializationError
from mesh._globalops import install as _install_global_names

__all__ = ["blob", "class_by_value", "dumps", "fallback"]

log = logging.getLogger("mesh")

_DYNAMIC = "<dynamic-code>"
_FALLBACK_MAX = 256 * 1024  # bytes: a larger class is sent by value only when the server asks for it
_blobs: weakref.WeakKeyDictionary[type, bytes] = weakref.WeakKeyDictionary()  # class -> its bytes by value
_pickle_lock = threading.RLock()


def _code_reduce(code: types.CodeType) -> Any:
    fn, args = _cp._code_reduce(code)
    if code.co_filename != _DYNAMIC:
        args = tuple(code.co_filename if (type(a) is str and a == _DYNAMIC) else a for a in args)
    return fn, args


class _Pickler(cloudpickle.Pickler):
    dispatch_table = ChainMap({types.CodeType: _code_reduce}, cloudpickle.Pickler.dispatch_table)


# a cloudpickle without these internals (another major version): its own dumps, as before
_USABLE = hasattr(_cp, "_code_reduce") and isinstance(getattr(cloudpickle.Pickler, "dispatch_table", None), ChainMap)
_install_global_names(_cp)  # a class's first pickle without dis (mesh._globalops): on to_dist()'s first creation


def dumps(obj: Any) -> bytes:
    """``cloudpickle.dumps(obj)``, keeping the file names of code pickled by value."""
    if not _USABLE:
        return cloudpickle.dumps(obj)
    buf = io.BytesIO()
    _Pickler(buf, protocol=cloudpickle.DEFAULT_PROTOCOL).dump(obj)
    return buf.getvalue()


def blob(cls: type) -> bytes:
    """The class pickled by value, made once per class (a thousand creations send the same bytes)."""
    data = _blobs.get(cls)
    if data is None:
        with class_by_value(cls):
            try:
                data = dumps(cls)
            except Exception as exc:  # e.g. a module-level lock its methods use
                raise SerializationError(
                    f"class {cls.__qualname__} (module {cls.__module__}) cannot be sent to the server by value: "
                    f"{type(exc).__name__}: {exc}. Something its code refers to (a module-level lock, file, "
                    f"socket or client) cannot travel: make it in __init__, or put the class in a module the "
                    f"server can import (--agent-dir, or on its sys.path)") from None
            _blobs[cls] = data
    return data


def fallback(cls: type) -> bytes | None:
    """The class by value to send along with its first creation on a server, for when the server
    cannot import it (it imports it if it can): the user's own modules, not installed packages nor
    the standard library (a server in the same environment imports those). None: send none."""
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None)
    if not path or cls.__module__.partition(".")[0] == "mesh" or os.path.abspath(path).startswith(_installed()):
        return None
    try:
        data = blob(cls)
    except Exception as exc:  # not picklable by value: the server imports it, or asks (needclass)
        log.debug("no fallback for %s:%s: %s", cls.__module__, cls.__qualname__, exc)
        return None
    return data if len(data) <= _FALLBACK_MAX else None


@functools.cache
def _installed() -> tuple[str, ...]:
    """Where installed packages and the standard library live (their modules are not sent by value)."""
    import site

    roots = [os.path.dirname(os.__file__)]
    for name in ("getsitepackages", "getusersitepackages"):  # (an old virtualenv's site lacks them)
        try:
            found = getattr(site, name)()
        except Exception:  # noqa: BLE001 - then that root is not known: classes there get a fallback
            continue
        roots += [found] if isinstance(found, str) else list(found)
    return tuple(os.path.join(os.path.abspath(r), "") for r in roots if r)


@contextlib.contextmanager
def class_by_value(cls: type) -> Iterator[None]:
    """Pickle the class's module by value (the server cannot import it)."""
    module = sys.modules.get(cls.__module__)
    if module is None or cls.__module__ == "__main__":
        yield
        return
    with _pickle_lock:
        registered = False
        try:
            cloudpickle.register_pickle_by_value(module)
            registered = True
        except ValueError:  # already registered
            pass
        try:
            yield
        finally:
            if registered:
                cloudpickle.unregister_pickle_by_value(module)
