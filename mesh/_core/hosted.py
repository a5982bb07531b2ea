"""The objects this process hosts (as a server), by identity: what lets ``self`` travel as a reference.

An object a server built (its mailbox, its id) is *hosted*. When it is pickled for the wire (a call
argument, a result, a stream item leaving this process), :mod:`mesh._rpc`'s codec hook asks
:func:`reference` and sends what a proxy of it would send, so the receiver calls the same actor
instead of a copy that silently diverges (Pyro's "autoproxy"). An object that is not hosted (a
plain local instance) stays a value, as before. The hook is asked only for objects of ``RpcMeta``
classes, once their pickling has started: plain values never reach it.

Each server keeps a :class:`Registry`: ``id(obj)`` -> the server's own record of the object (its
``Actor``, whose ``.obj`` is the object), one dict entry per object and nothing else (no weak
reference or closure per object: at a million objects those cost ~800 bytes each). The record
says whether the id still names that object. The server registers an object (:func:`host`)
before its ``__init__`` runs (:func:`constructing`, consumed by ``RpcMeta.__call__``), so
``hub.register(self)`` in a constructor sends a reference too, and unregisters it
(:func:`unhost`) when the object goes. The module holds registries weakly: a server that goes
takes its entries with it.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable

__all__ = ["Registry", "constructing", "host", "reference", "take_pending", "unhost"]

Describe = Callable[[Any, Any], "tuple | None"]  # (the record, the object) -> the proxy's arguments, or None


class Registry:
    """One server's hosted objects: ``id(obj)`` -> its record (anything with ``.obj``).

    ``describe(record, obj)`` gives the proxy's constructor arguments (None: a value after all).
    """

    __slots__ = ("by_id", "describe", "__weakref__")

    def __init__(self, describe: Describe) -> None:
        self.by_id: dict[int, Any] = {}
        self.describe = describe
        _registries.add(self)


_registries: weakref.WeakSet[Registry] = weakref.WeakSet()
_local = threading.local()  # .pending: (class, registry, record); .building: the object whose __init__ runs


def host(registry: Registry, obj: Any, record: Any) -> None:
    """``obj`` is hosted by ``registry``'s server: pickled for the wire, it travels as a proxy."""
    registry.by_id[id(obj)] = record


def unhost(registry: Registry, obj: Any) -> None:
    """``obj`` is no longer hosted (deleted, its session ended, its constructor failed)."""
    if obj is not None:
        record = registry.by_id.get(id(obj))
        if record is not None and (record.obj is obj or record.obj is None):
            del registry.by_id[id(obj)]


def reference(obj: Any) -> tuple | None:
    """The proxy arguments of a hosted object, or None (not hosted: it travels as a value)."""
    key = id(obj)
    for registry in list(_registries):
        record = registry.by_id.get(key)
        if record is not None and (record.obj is obj or getattr(_local, "building", None) is obj):
            return registry.describe(record, obj)
    return None


class constructing:  # noqa: N801 - a context manager used like a function
    """``with constructing(cls, registry, record):`` the next ``cls(...)`` on this thread is hosted
    from its ``__new__`` on (before ``__init__``): see ``RpcMeta.__call__``."""

    __slots__ = ("_pending",)

    def __init__(self, cls: type, registry: Registry, record: Any) -> None:
        self._pending = (cls, registry, record)

    def __enter__(self) -> None:
        _local.pending = self._pending

    def __exit__(self, *exc: Any) -> None:
        _local.pending = None


def take_pending(cls: type) -> tuple | None:
    """The server is constructing exactly ``cls`` on this thread: ``(registry, record)`` (consumed,
    so objects the constructor itself makes are not hosted); otherwise None."""
    pending = getattr(_local, "pending", None)
    if pending is None or pending[0] is not cls:
        return None
    _local.pending = None
    return pending[1], pending[2]


class building:  # noqa: N801 - a context manager used like a function
    """``with building(obj):`` ``obj``'s ``__init__`` runs on this thread: its record's ``.obj`` is
    not set yet, and :func:`reference` knows it by this."""

    __slots__ = ("_obj", "_before")

    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def __enter__(self) -> None:
        self._before = getattr(_local, "building", None)
        _local.building = self._obj

    def __exit__(self, *exc: Any) -> None:
        _local.building = self._before
