"""The objects this process hosts (as a server), by identity: what lets ``self`` travel as a reference.

An object a server built (its mailbox, its id) is *hosted*. When it is pickled for the wire (a call
argument, a result, a stream item leaving this process), :mod:`mesh._rpc`'s codec hook asks
:func:`reference` and sends what a proxy of it would send, so the receiver calls the same actor
instead of a copy that silently diverges (Pyro's "autoproxy"). An object that is not hosted (a
plain local instance) stays a value, as before. The hook is asked only for objects of ``RpcMeta``
classes, once their pickling has started: plain values never reach it.

The server registers an object (:func:`host`) before its ``__init__`` runs (:func:`constructing`,
consumed by ``RpcMeta.__call__``), so ``hub.register(self)`` in a constructor sends a reference
too, and unregisters it (:func:`unhost`) when the object goes. Entries are weak where the object
allows it: a server dropped without ``drop`` leaks nothing.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable

__all__ = ["constructing", "host", "reference", "take_pending", "unhost"]

Describe = Callable[[Any], tuple]  # (the object) -> the proxy's constructor arguments

_hosted: dict[int, tuple[Any, Describe]] = {}  # id(obj) -> (weakref or the object, describe)
_local = threading.local()  # .pending: (class, describe) of the construction running on this thread


def host(obj: Any, describe: Describe) -> None:
    """``obj`` is hosted here: pickled for the wire, it travels as ``describe(obj)``'s proxy."""
    key = id(obj)
    try:
        ref: Any = weakref.ref(obj, lambda r, key=key: _forget(key, r))
    except TypeError:  # no __weakref__ slot: held until unhost()
        ref = obj
    _hosted[key] = (ref, describe)


def unhost(obj: Any) -> None:
    """``obj`` is no longer hosted (deleted, its session ended, its constructor failed)."""
    if obj is not None:
        entry = _hosted.get(id(obj))
        if entry is not None and _target(entry[0]) is obj:
            _hosted.pop(id(obj), None)


def reference(obj: Any) -> tuple | None:
    """The proxy arguments of a hosted object, or None (not hosted: it travels as a value)."""
    entry = _hosted.get(id(obj))
    if entry is None or _target(entry[0]) is not obj:
        return None
    return entry[1](obj)


class constructing:  # noqa: N801 - a context manager used like a function
    """``with constructing(cls, describe):`` the next ``cls(...)`` on this thread is hosted from
    its ``__new__`` on (before ``__init__``): see ``RpcMeta.__call__``."""

    __slots__ = ("_pending",)

    def __init__(self, cls: type, describe: Describe) -> None:
        self._pending = (cls, describe)

    def __enter__(self) -> None:
        _local.pending = self._pending

    def __exit__(self, *exc: Any) -> None:
        _local.pending = None


def take_pending(cls: type) -> Describe | None:
    """The server is constructing exactly ``cls`` on this thread: its ``describe`` (consumed, so
    objects the constructor itself makes are not hosted); otherwise None."""
    pending = getattr(_local, "pending", None)
    if pending is None or pending[0] is not cls:
        return None
    _local.pending = None
    return pending[1]


def _target(ref: Any) -> Any:
    return ref() if type(ref) is weakref.ReferenceType else ref


def _forget(key: int, ref: Any) -> None:
    entry = _hosted.get(key)
    if entry is not None and entry[0] is ref:
        _hosted.pop(key, None)
