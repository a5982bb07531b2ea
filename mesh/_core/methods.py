"""Call modes and the method table of a distributable class: what both sides agree a method is.

The client reads a proxy's table to know whether a call waits (``SYNC``) or returns a future
(``ASYNC``, ``ASYNC_MSG``); the server checks that a class has a table before it builds one.
"""

from __future__ import annotations

import functools
import sys
import types
from typing import Any

__all__ = ["ASYNC", "ASYNC_MSG", "STREAM", "STREAM_MSG", "SYNC", "getattr_static", "is_rpc_class",
           "isasyncgenfunction", "iscoroutinefunction", "isgeneratorfunction", "method_table", "runs_on_loop"]

SYNC = "sync"
ASYNC = "async"
ASYNC_MSG = "msg"  # async, and the result is a message: the proxy returns a Placeholder
STREAM = "stream"  # a generator (@stream_func): the proxy returns a Stream at once
STREAM_MSG = "smsg"  # an agent's streaming reply: a Placeholder that can also be iterated for its chunks


def method_table(cls: type) -> dict[str, str]:
    """Public method name -> call mode, over the whole MRO.

    A mode set by ``@async_func`` / ``@sync_func`` wins; else an ``async def`` method is
    ``ASYNC`` (a coroutine function is an async function); else an override keeps the
    mode of what it overrides; else ``SYNC``. Async generators are not coroutine
    functions: they stay ``SYNC`` (the server refuses to call them, see ``runs_on_loop``).
    """
    table: dict[str, str] = {}
    is_agent = bool(getattr(cls, "_mesh_agent", False))
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            if (attr.startswith("_") and attr != "__call__") or attr == "to_dist":
                continue
            fn = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
            if not callable(fn) or isinstance(fn, type):
                continue
            # An override without a decorator keeps the mode of what it overrides.
            mode = getattr(fn, "_mesh_mode", None)
            if mode is None:
                mode = ASYNC if iscoroutinefunction(fn) else table.get(attr) or SYNC
            if mode == ASYNC and is_agent and attr in ("reply", "__call__"):
                mode = ASYNC_MSG
            elif mode == STREAM and is_agent and attr in ("reply", "__call__"):
                mode = STREAM_MSG
            table[attr] = mode
    return table


def is_rpc_class(value: object) -> bool:
    """True for a class made with ``mesh.RpcMeta`` (it carries a method table of its own making)."""
    return isinstance(value, type) and isinstance(vars(value).get("_mesh_methods"), dict)


def runs_on_loop(cls: type, name: str, fn: object) -> bool:
    """True if the server runs method ``name`` of ``cls`` (``fn``, as looked up on the object) on its event loop.

    A coroutine function does, whatever its mode (``@sync_func async def`` only makes the caller
    wait), and so does an async generator function (``@stream_func async def ... yield``). (An
    agent's inherited ``__call__`` is of its ``reply``'s kind: see ``mesh._agent``.)
    """
    key = getattr(fn, "__func__", fn)  # a bound method: its function (one check per function, not per call)
    try:
        return _ON_LOOP[key]
    except (KeyError, TypeError):  # TypeError: an unhashable callable
        pass
    on_loop = iscoroutinefunction(fn) or isasyncgenfunction(fn)
    try:
        if len(_ON_LOOP) > 4096:  # functions made at run time: keep the cache bounded
            _ON_LOOP.clear()
        _ON_LOOP[key] = on_loop
    except TypeError:
        pass
    return on_loop


_ON_LOOP: dict[Any, bool] = {}


# -- inspect's function kinds, without importing inspect ---------------------------------------------
# ``inspect`` (with the ``ast``, ``dis`` and ``tokenize`` it imports) is ~0.6 MiB of a server's memory
# for its whole life, and a server asks it only these questions. When inspect is loaded, it answers
# (a function can carry ``inspect.markcoroutinefunction``'s mark only if inspect is loaded); else the
# code flags answer as inspect's ``_has_code_flag`` reads them.

_CO_GENERATOR, _CO_COROUTINE, _CO_ASYNC_GENERATOR = 0x20, 0x80, 0x200  # <code.h>, as inspect.CO_*


def _has_code_flag(fn: Any, flag: int) -> bool:
    while isinstance(fn, types.MethodType):
        fn = fn.__func__
    while isinstance(fn, functools.partial):
        fn = fn.func
    if not isinstance(fn, types.FunctionType) and not _functionlike(fn):
        return False
    return bool(fn.__code__.co_flags & flag)


def _functionlike(fn: Any) -> bool:
    """inspect's ``_signature_is_functionlike``: a function of another kind (Cython's) with a code object."""
    if not callable(fn) or isinstance(fn, type):
        return False
    code = getattr(fn, "__code__", None)
    defaults = getattr(fn, "__defaults__", _functionlike)  # missing: not function-like (inspect's _void)
    kwdefaults = getattr(fn, "__kwdefaults__", _functionlike)
    annotations = getattr(fn, "__annotations__", None)
    return (isinstance(code, types.CodeType) and isinstance(getattr(fn, "__name__", None), str)
            and (defaults is None or isinstance(defaults, tuple)) and (kwdefaults is None or isinstance(kwdefaults, dict))
            and (annotations is None or isinstance(annotations, dict)))


def iscoroutinefunction(fn: Any) -> bool:
    """``inspect.iscoroutinefunction(fn)``."""
    inspect = sys.modules.get("inspect")
    return inspect.iscoroutinefunction(fn) if inspect is not None else _has_code_flag(fn, _CO_COROUTINE)


def isasyncgenfunction(fn: Any) -> bool:
    """``inspect.isasyncgenfunction(fn)``."""
    inspect = sys.modules.get("inspect")
    return inspect.isasyncgenfunction(fn) if inspect is not None else _has_code_flag(fn, _CO_ASYNC_GENERATOR)


def isgeneratorfunction(fn: Any) -> bool:
    """``inspect.isgeneratorfunction(fn)``."""
    inspect = sys.modules.get("inspect")
    return inspect.isgeneratorfunction(fn) if inspect is not None else _has_code_flag(fn, _CO_GENERATOR)


_MRO = type.__dict__["__mro__"].__get__  # read past a metaclass's own __mro__ / __dict__ attributes
_DICT = type.__dict__["__dict__"].__get__


def getattr_static(cls: type, name: str) -> Any:
    """``inspect.getattr_static(cls, name)`` of a class: the raw attribute (no descriptor run) from
    the class's MRO, else its metaclass's. Raises AttributeError."""
    inspect = sys.modules.get("inspect")
    if inspect is not None:
        return inspect.getattr_static(cls, name)
    for owner in (cls, type(cls)):
        for entry in _MRO(owner):
            namespace = _DICT(entry)
            if name in namespace:
                return namespace[name]
    raise AttributeError(name)
