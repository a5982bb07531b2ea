"""The codec's pickling (:func:`dumps`): what cannot travel, the one reducer hook the layer above may
install (``set_reducer_hook``), and which pickler a value needs.

A value pickles with the C ``pickle.Pickler`` when nothing in it needs pickling by value: a ``Msg``,
a dataclass, an enum, any object of a class the peer imports by name. cloudpickle (~1.2 MiB with what
it imports, ~10 ms to import) is loaded only for a value that needs it: a lambda, a closure, a class
or function of ``__main__`` or of a module registered by value or not importable, a module object,
and the few types only cloudpickle reduces (its own reducers: properties, classmethods, code, cells,
dict views, ...). The C pickler's ``reducer_override`` applies cloudpickle's rule for "by reference"
to every class and function it meets; at the first part that must go by value it stops, and the
whole value is pickled by cloudpickle, as every value was before. So a payload is byte for byte what
stdlib ``pickle`` makes of the value, or what cloudpickle makes: either loads with ``pickle.loads``,
and the first never needs cloudpickle to load.

The verdict for each class is cached: a class that must go by value is known at its first sight, so
stopping at it costs one exception (~2.5 us, against ~34 us for cloudpickle to pickle an instance of
a ``__main__`` class). A value whose top-level class needed cloudpickle is followed by
:data:`_CLOUDPICKLE_SPAN` values of that class that go straight to cloudpickle: a failed C attempt
that stops deep inside a value (up to half of cloudpickle's time for it) is not paid again for each.
"""

from __future__ import annotations

import _thread
import io
import pickle
import socket
import sys
import threading
import types
from typing import Any, Callable

from transport._errors import Untransferable

__all__ = ["dumps", "pickler_class", "set_attempt_hooks", "set_reducer_hook"]


def _untransferable_kinds() -> tuple[tuple[tuple[type, ...], str], ...]:
    kinds: list[tuple[tuple[type, ...], str]] = [
        ((io.IOBase,), "an open file"),  # minus io.StringIO / io.BytesIO, see _verdict
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

# The types cloudpickle 3 reduces itself (cloudpickle.Pickler._dispatch_table), by exact type as a
# dispatch table is looked up: by (module, qualname), so that none of their modules is imported here
# (tests/test_msgpickle.py checks this set against the installed cloudpickle's table).
_CLOUDPICKLE_TYPES = frozenset(
    {
        ("_io", "TextIOWrapper"),
        ("_weakrefset", "WeakSet"),
        ("abc", "abstractclassmethod"),
        ("abc", "abstractproperty"),
        ("abc", "abstractstaticmethod"),
        ("builtins", "cell"),
        ("builtins", "classmethod"),
        ("builtins", "code"),
        ("builtins", "dict_items"),
        ("builtins", "dict_keys"),
        ("builtins", "dict_values"),
        ("builtins", "getset_descriptor"),
        ("builtins", "mappingproxy"),
        ("builtins", "memoryview"),
        ("builtins", "method"),
        ("builtins", "module"),
        ("builtins", "odict_items"),
        ("builtins", "odict_keys"),
        ("builtins", "odict_values"),
        ("builtins", "property"),
        ("builtins", "staticmethod"),
        ("dataclasses", "_FIELD_BASE"),
        ("logging", "Logger"),
        ("logging", "RootLogger"),
        ("typing", "TypeVar"),
    }
)
# classes of the types module that cloudpickle pickles as ``_builtin_type(name)`` (the C pickler
# cannot name most of them); these three the C pickler saves as cloudpickle does, ``type(None)``
_TYPES_MODULE = frozenset(v for v in vars(types).values() if type(v) is type)
_SINGLETON_TYPES = (type(None), type(Ellipsis), type(NotImplemented))

_UNKNOWN = object()
_CLASS = object()  # the object is a class: by reference if importable (cloudpickle's rule), else by value
_FUNCTION = object()  # the same for a function
_BY_VALUE = object()  # only cloudpickle pickles it as it should
# type -> None (pickled as usual), what it is when it cannot travel, one of the three above, or
# (its hook's reducer, what it is when it cannot travel, one of the above or None)
_verdicts: dict[type, Any] = {}
_refs: dict[type, bool] = {}  # class -> importable by name (cloudpickle's _lookup_module_and_qualname)
# top-level class whose value needed cloudpickle -> its next values that go straight to cloudpickle
# (the failed C attempt costs up to half of cloudpickle's pickling: paid at most once per span; not
# for ever, since a Msg holding a lambda once says little of the next Msg, which C pickles 1.7x faster)
_cloudpickled: dict[type, int] = {}
_CLOUDPICKLE_SPAN = 64
_reducer_hook: Callable[[type], Callable[[Any], Any] | None] | None = None
_CACHE_MAX = 4096  # classes made at run time: keep the caches bounded
_CP = "cloudpickle.cloudpickle"


class _NeedsCloudpickle(Exception):
    """A part of the value must be pickled by value: the C pickler stops there."""


def dumps(obj: Any, threshold: int) -> tuple[bytes, list[memoryview]]:
    """Pickle ``obj`` (protocol 5): the payload, and the out-of-band buffers of ``threshold`` bytes
    or more (smaller ones stay in band).

    Raises:
        Untransferable: something in it cannot travel.
        RecursionError: nested too deeply for the C pickler.
        Exception: what cloudpickle raises for a value it cannot pickle.
    """
    oob: list[memoryview] = []

    def buffer_callback(pb: pickle.PickleBuffer) -> bool:
        raw = pb.raw()
        if raw.nbytes < threshold:
            return True  # keep small buffers in band
        oob.append(raw)
        return False

    cls = type(obj)
    left = _cloudpickled.get(cls)
    if left is None:
        hooks = _attempt_hooks[0]
        mark = hooks[0]() if hooks is not None else None
        with io.BytesIO() as file:
            try:
                _CPickler(file, protocol=5, buffer_callback=buffer_callback).dump(obj)
                return file.getvalue(), oob
            except (Untransferable, RecursionError):
                raise
            except Exception:  # noqa: BLE001 - a part by value, or one only cloudpickle reduces: it decides
                if len(_cloudpickled) > _CACHE_MAX:
                    _cloudpickled.clear()
                _cloudpickled[cls] = _CLOUDPICKLE_SPAN
        if hooks is not None:  # what the parts reduced so far did is undone: cloudpickle reduces them again
            hooks[1](mark)
        oob.clear()
    elif left > 1:
        _cloudpickled[cls] = left - 1  # (threads may race here: it only decides when to try again)
    else:
        _cloudpickled.pop(cls, None)
    with io.BytesIO() as file:
        pickler_class()(file, protocol=5, buffer_callback=buffer_callback).dump(obj)
        return file.getvalue(), oob


class _CPickler(pickle.Pickler):
    """The C pickler, refusing what cannot travel and stopping at what must go by value."""

    def reducer_override(self, obj: Any) -> Any:
        # called for objects that are not of the pickler's own exact builtin types (str, dict, ...)
        what = _verdicts.get(type(obj), _UNKNOWN)
        if what is None:
            return NotImplemented
        if what is _UNKNOWN:
            what = _verdict(type(obj))
            if what is None:
                return NotImplemented
        if type(what) is tuple:  # a class with a reducer hook (set_reducer_hook)
            reduced = _hooked(what, obj)
            if reduced is not None:
                return reduced
            what = what[2]
            if what is None:
                return NotImplemented
        if what is _CLASS:
            if _class_by_reference(obj):
                return NotImplemented
            raise _NeedsCloudpickle
        if what is _FUNCTION:
            if _importable(obj) and not _registered_by_value(obj.__module__):
                return NotImplemented
            raise _NeedsCloudpickle
        if what is _BY_VALUE:
            raise _NeedsCloudpickle
        raise Untransferable(what, obj)


def _hooked(verdict: tuple, obj: Any) -> Any:
    """What the reducer hook makes of the object, or None (pickled as usual, unless it cannot travel)."""
    reduced = verdict[0](obj)
    if reduced is None and verdict[1] is not None:
        raise Untransferable(verdict[1], obj)
    return reduced


def _class_by_reference(cls: type) -> bool:
    """cloudpickle's ``_should_pickle_by_reference`` for a class, and not one of ``types``' own
    classes that cloudpickle names its way (``_builtin_type``)."""
    ref = _refs.get(cls)
    if ref is None:
        ref = (cls not in _TYPES_MODULE or cls in _SINGLETON_TYPES) and _importable(cls)
        if len(_refs) > _CACHE_MAX:
            _refs.clear()
        _refs[cls] = ref
    return ref and not _registered_by_value(cls.__module__)


def _importable(obj: Any) -> bool:
    """The object is what its module's attribute of its qualified name is (cloudpickle's
    ``_lookup_module_and_qualname``; a module named ``__main__`` or not in ``sys.modules`` is not).
    False also when its ``__module__`` is unset: cloudpickle then searches, and decides."""
    name = getattr(obj, "__qualname__", None)
    if name is None:
        name = getattr(obj, "__name__", None)
    module_name = getattr(obj, "__module__", None)
    if type(name) is not str or type(module_name) is not str or module_name == "__main__":
        return False
    target = sys.modules.get(module_name)
    if target is None:
        return False
    for part in name.split("."):
        if part == "<locals>":
            return False
        try:
            target = getattr(target, part)
        except Exception:  # noqa: BLE001 - not found (or a module __getattr__ failing): by value
            return False
    return target is obj


def _registered_by_value(module_name: str) -> bool:
    """The module or a package above it is registered with ``cloudpickle.register_pickle_by_value``
    (none is while cloudpickle is not loaded; asked at each use: registrations come and go)."""
    cp = sys.modules.get(_CP)
    if cp is None:
        return False
    registered = getattr(cp, "_PICKLE_BY_VALUE_MODULES", None)
    if registered is None:
        return True  # another cloudpickle: let it decide
    if not registered:
        return False
    name = module_name
    while True:
        if name in registered:
            return True
        name, dot, _ = name.rpartition(".")
        if not dot:
            return False


def pickler_class() -> type:
    """cloudpickle's pickler with the codec's rules, made at the first value that needs it."""
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
            cls = type(obj)
            what = _verdicts.get(cls, _UNKNOWN)
            if what is _UNKNOWN:
                what = _verdict(cls)
            if type(what) is str:
                raise Untransferable(what, obj)
            if type(what) is tuple:  # a class with a reducer hook (set_reducer_hook)
                reduced = _hooked(what, obj)
                if reduced is not None:
                    return reduced
            return override(self, obj)

    return _Pickler


_pickler_cls: list[Any] = [None]


def set_attempt_hooks(hooks: tuple[Callable[[], Any], Callable[[Any], None]] | None) -> None:
    """Install ``(mark, undo)``: ``mark()`` is called before the C pickler tries a value, and
    ``undo(mark())``'s result when that try is abandoned for cloudpickle, which then reduces every
    part again. The layer above uses it to take back what a ``__reduce__`` with side effects did in
    the abandoned try (a future pickled into call arguments records a new borrower each time)."""
    _attempt_hooks[0] = hooks


_attempt_hooks: list[Any] = [None]


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
    kind = _kind(cls)
    verdict: Any = (reducer, what, kind) if reducer is not None else what if what is not None else kind
    if len(_verdicts) > _CACHE_MAX:
        _verdicts.clear()
    _verdicts[cls] = verdict
    return verdict


def _kind(cls: type) -> Any:
    """How the C pickler treats an object of this class: as usual (None), or one of the markers."""
    try:
        if issubclass(cls, type):
            return _CLASS
    except TypeError:  # pragma: no cover - not a class (old extension types)
        return _BY_VALUE
    if cls is types.FunctionType:
        return _FUNCTION
    if (getattr(cls, "__module__", None), getattr(cls, "__qualname__", None)) in _CLOUDPICKLE_TYPES:
        return _BY_VALUE
    return None
