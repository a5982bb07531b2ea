"""The codec's pickler (cloudpickle, made at the first value that needs it: a process that only ever
sends plain values never loads cloudpickle, ~2 MiB with what it imports), what cannot travel, and the
one reducer hook the layer above may install (``set_reducer_hook``)."""

from __future__ import annotations

import _thread
import io
import socket
import threading
import types
from typing import Any, Callable

from transport._errors import Untransferable

__all__ = ["pickler_class", "set_reducer_hook"]


def _untransferable_kinds() -> tuple[tuple[tuple[type, ...], str], ...]:
    kinds: list[tuple[tuple[type, ...], str]] = [
        ((io.IOBase,), "an open file"),  # minus io.StringIO / io.BytesIO, see _Pickler
        ((socket.socket,), "a socket"),
        ((threading.Thread,), "a thread"),
        ((_thread.LockType, type(threading.RLock()), threading.Semaphore, threading.Barrier), "a lock"),
        ((threading.Condition,), "a condition variable"),
        ((threading.Event,), "an event"),
        ((types.GeneratorType, types.AsyncGeneratorType), "a generator"),
        ((types.CoroutineType,), "a coroutine"),
    ]
    try:
        import zmq
    except ImportError:  # pragma: no cover - a dependency
        pass
    else:
        kinds.append(((zmq.Socket,), "a ZeroMQ socket"))
        kinds.append(((zmq.Context,), "a ZeroMQ context"))
    return tuple(kinds)


_UNTRANSFERABLE = _untransferable_kinds()
_UNTRANSFERABLE_TYPES = tuple(t for types_, _ in _UNTRANSFERABLE for t in types_)
_IN_MEMORY_IO = (io.StringIO, io.BytesIO)  # copies of their contents travel fine


def pickler_class() -> type:
    """The codec's pickler class, made at the first value that needs pickling: cloudpickle (~2 MiB
    with what it imports) is not loaded by a process that only ever sends plain values."""
    cls = _pickler_cls[0]
    if cls is None:
        cls = _pickler_cls[0] = _make_pickler()
    return cls


def _make_pickler() -> type:
    import cloudpickle

    override = cloudpickle.Pickler.reducer_override

    class _Pickler(cloudpickle.Pickler):
        """cloudpickle, refusing what cannot travel instead of sending something else in its place."""

        def reducer_override(self, obj: Any) -> Any:
            # called only for objects that are not plain builtin values (the pickler's fast paths)
            cls = type(obj)
            what = _verdicts.get(cls, _UNKNOWN)
            if what is _UNKNOWN:
                what = _verdict(cls)
            if what is not None:
                if type(what) is str:
                    raise Untransferable(what, obj)
                reduced = what[0](obj)  # a class with a reducer hook (set_reducer_hook)
                if reduced is not None:
                    return reduced
                if what[1] is not None:
                    raise Untransferable(what[1], obj)
            return override(self, obj)

    return _Pickler


_pickler_cls: list[Any] = [None]
_UNKNOWN = object()
# type -> None (pickled as usual), what it is when it cannot travel, or (its hook's reducer, that)
_verdicts: dict[type, Any] = {}
_reducer_hook: Callable[[type], Callable[[Any], Any] | None] | None = None


def set_reducer_hook(hook: Callable[[type], Callable[[Any], Any] | None] | None) -> None:
    """Install the one hook that may replace how objects of some classes are pickled.

    ``hook(cls)`` is asked once per class pickled (cached): a ``reducer(obj)`` for its objects, or
    None. The reducer returns a ``__reduce__`` tuple to pickle instead of the object, or None to
    pickle the object as usual. Only objects that are pickled reach it (plain values never do).
    The layer above uses it to send an object it hosts as a reference; the codec knows nothing of
    what the classes are.
    """
    global _reducer_hook
    _reducer_hook = hook
    _verdicts.clear()


def _verdict(cls: type) -> Any:
    what = None
    if issubclass(cls, _UNTRANSFERABLE_TYPES) and not issubclass(cls, _IN_MEMORY_IO):
        what = next(w for kinds, w in _UNTRANSFERABLE if issubclass(cls, kinds))
    hook = _reducer_hook
    reducer = hook(cls) if hook is not None else None
    verdict = what if reducer is None else (reducer, what)
    if len(_verdicts) > 4096:  # classes made at run time: keep the cache bounded
        _verdicts.clear()
    _verdicts[cls] = verdict
    return verdict
