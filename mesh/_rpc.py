"""``RpcMeta``: the metaclass that makes a class distributable (``to_dist``), and its decorators."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from mesh._core import hosted
from mesh._core.methods import ASYNC, STREAM, SYNC, isasyncgenfunction, isgeneratorfunction, method_table
from transport._codec import set_reducer_hook

__all__ = ["RpcMeta", "async_func", "stream_func", "sync_func"]

F = TypeVar("F", bound=Callable[..., Any])


def async_func(fn: F) -> F:
    """Mark a method asynchronous: on a remote object it returns an ``AsyncResult`` at once."""
    fn._mesh_mode = ASYNC  # type: ignore[attr-defined]
    return fn


def stream_func(fn: F) -> F:
    """Mark a generator (or async generator) method a stream: on a remote object it returns a
    ``mesh.Stream`` at once, whose items reach its readers as the generator makes them. On a
    local object the method stays a plain generator.

    Raises:
        TypeError: ``fn`` is not a generator or async generator function.
    """
    if not (isgeneratorfunction(fn) or isasyncgenfunction(fn)):
        raise TypeError(f"@stream_func needs a generator function (one that yields), not {getattr(fn, '__qualname__', fn)!r}")
    fn._mesh_mode = STREAM  # type: ignore[attr-defined]
    return fn


def sync_func(fn: F) -> F:
    """Mark a method synchronous (the default): a remote call blocks until it returns."""
    fn._mesh_mode = SYNC  # type: ignore[attr-defined]
    return fn


class RpcMeta(type):
    """Metaclass of distributable classes.

    A class made with it gets ``to_dist(host=None, port=None, **options)`` and
    accepts the constructor keyword ``to_dist=`` (``True``, a
    :class:`DistConf` or a dict of its fields): then the object is built on an
    agent server only, and the caller gets an :class:`~mesh.RpcObject`.
    """

    def __new__(mcs, name: str, bases: tuple, namespace: dict, **kwargs: Any) -> RpcMeta:
        cls = super().__new__(mcs, name, bases, namespace, **kwargs)
        cls._mesh_methods = method_table(cls)  # type: ignore[attr-defined]
        if "to_dist" not in namespace:
            cls.to_dist = _to_dist  # type: ignore[attr-defined]
        return cls

    def __call__(cls, *args: Any, to_dist: Any = None, **kwargs: Any) -> Any:
        if to_dist is None or to_dist is False:
            pending = hosted.take_pending(cls)  # None unless a server is building this very class here
            obj = super().__call__(*args, **kwargs) if pending is None else _build_hosted(cls, args, kwargs, pending)
            try:
                obj.__dict__["_mesh_init_args"] = (args, kwargs)
            except AttributeError:  # __slots__ without __dict__: to_dist() will say so
                pass
            return obj
        from mesh._placement import place  # the client side, loaded on first placement (not by a server)

        return place(cls, args, kwargs, _conf(to_dist))


def _build_hosted(cls: Any, args: tuple, kwargs: dict, pending: tuple) -> Any:
    """``type.__call__`` with the object hosted between ``__new__`` and ``__init__``: ``self``
    passed on by the constructor (``hub.register(self)``) already travels as a reference."""
    registry, record = pending
    new = cls.__new__
    obj = new(cls) if new is object.__new__ else new(cls, *args, **kwargs)
    if isinstance(obj, cls):
        hosted.host(registry, obj, record)
        try:
            with hosted.building(obj):
                type(obj).__init__(obj, *args, **kwargs)
        except BaseException:
            hosted.unhost(registry, obj)  # never built: the server drops it
            raise
    return obj


def _hosted_reducer(cls: type) -> Any:
    """The codec's hook (asked once per class pickled): objects of RpcMeta classes are checked
    against the hosted ones; every other class pickles as before."""
    return _reduce_hosted if isinstance(cls, RpcMeta) else None


def _reduce_hosted(obj: Any) -> Any:
    """A hosted object pickles as its proxy does (the same actor); any other stays a value (None)."""
    args = hosted.reference(obj)
    if args is None:
        return None
    from mesh.client._proxy import RpcObject  # (loaded already wherever an object is hosted)

    return RpcObject, args


set_reducer_hook(_hosted_reducer)


def _conf(to_dist: Any) -> Any:
    from mesh._placement import DistConf

    if to_dist is True:
        return DistConf()
    if isinstance(to_dist, dict):
        return DistConf(**to_dist)
    raise TypeError(f"to_dist must be True, a DistConf or a dict, not {type(to_dist).__name__}")


def _to_dist(self: Any, host: str | None = None, port: int | str | None = None, **options: Any) -> Any:
    """Re-create this object on an agent server and return its proxy.

    The object is rebuilt from the arguments it was constructed with: state
    changed after construction does not travel.

    Args:
        host: the server's host (or ``"host:port"``); ``None`` finds one
            (discovery, else a child server of this process).
        port: the server's port.
        **options: further placement options.

    Raises:
        ServerUnavailable: the server cannot be reached.
        RemoteError: the constructor raised on the server.
    """
    init = getattr(self, "__dict__", {}).get("_mesh_init_args")
    if init is None:
        raise TypeError(f"{type(self).__name__} object has no recorded constructor arguments; use to_dist= in the constructor")
    from mesh._placement import DistConf, place  # the client side, loaded on first placement

    conf = DistConf(host=host, port=port, **options)
    agent_id = getattr(self, "__dict__", {}).get("agent_id")
    if isinstance(agent_id, str):
        conf["_attrs"] = {"agent_id": agent_id}  # the agent keeps its identity on the server
    return place(type(self), init[0], init[1], conf)
