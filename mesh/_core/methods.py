"""Call modes and the method table of a distributable class: what both sides agree a method is.

The client reads a proxy's table to know whether a call waits (``SYNC``) or returns a future
(``ASYNC``, ``ASYNC_MSG``); the server checks that a class has a table before it builds one.
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["ASYNC", "ASYNC_MSG", "STREAM", "STREAM_MSG", "SYNC", "is_rpc_class", "method_table", "runs_on_loop"]

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
                mode = ASYNC if inspect.iscoroutinefunction(fn) else table.get(attr) or SYNC
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
    on_loop = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
    try:
        if len(_ON_LOOP) > 4096:  # functions made at run time: keep the cache bounded
            _ON_LOOP.clear()
        _ON_LOOP[key] = on_loop
    except TypeError:
        pass
    return on_loop


_ON_LOOP: dict[Any, bool] = {}
