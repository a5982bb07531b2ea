"""Load a class pickled by value (cloudpickle) without importing cloudpickle: :func:`loads`.

A client sends a class its server cannot import by value, made by cloudpickle; unpickling such a
payload imports ``cloudpickle.cloudpickle`` for the handful of functions it names, and with it
``dataclasses``, ``inspect``, ``ast``, ``dis``, ``uuid`` and cloudpickle's own pickler: ~1.2 MiB of a
server's private memory, kept for the server's life, to rebuild one class. Here are those few
load-side functions, as cloudpickle 3 defines them (a class skeleton, its state, its functions,
their cells and globals), looked up by :class:`_Unpickler` under cloudpickle's names.

Anything else (a name of cloudpickle's not here, an error, a payload of another cloudpickle
version) undoes what the attempt tracked and loads the payload with ``pickle.loads``, that is with
cloudpickle itself: the result is never other than cloudpickle's. Once cloudpickle is loaded in the
process, :func:`loads` is ``pickle.loads``.

cloudpickle keeps one class per *class tracker id* (the same class sent twice, or its instances,
unpickle to one class object, and pickling it back names the same id). The classes rebuilt here are
tracked in this module's tables, and when cloudpickle is imported later (by a value that needs its
pickler, by anything) its module is given these same tables and lock before anyone uses it
(:class:`_ShareTrackers`), so it knows every class rebuilt before it came.
"""

from __future__ import annotations

import builtins
import io
import pickle
import sys
import threading
import types
import weakref
from typing import Any

__all__ = ["load_value", "loads"]

_CP = "cloudpickle.cloudpickle"
_BY_CLASS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # cloudpickle's _DYNAMIC_CLASS_TRACKER_*
_BY_ID: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_LOCK = threading.Lock()
_attempt = threading.local()  # .tracked: ids this thread's current attempt added (undone if it fails)


class _Fallback(Exception):
    """The payload needs more of cloudpickle than this module has."""


def loads(blob: bytes) -> Any:
    """``pickle.loads(blob)``, without importing cloudpickle for a class pickled by value."""
    if _CP in sys.modules:
        return pickle.loads(blob)
    _share_on_import()
    tracked: list[tuple[str, type]] = []
    _attempt.tracked = tracked
    try:
        return _Unpickler(io.BytesIO(blob)).load()
    except Exception:  # noqa: BLE001  # not ours to judge: cloudpickle loads it (or raises its own error)
        with _LOCK:
            for tracker_id, cls in tracked:
                if _BY_ID.get(tracker_id) is cls:
                    del _BY_ID[tracker_id]
                _BY_CLASS.pop(cls, None)
        return pickle.loads(blob)
    finally:
        _attempt.tracked = None


def load_value(payload: bytes, buffers: Any = ()) -> Any:
    """``pickle.loads(payload, buffers=buffers)`` for a value (the codec's, made by cloudpickle): the
    load-side functions here serve it while cloudpickle is not loaded, and a name of cloudpickle's not
    here imports cloudpickle (sharing this module's class trackers) and is its own. Loaded once
    (no second attempt: the objects it makes on the way, proxies included, are made once)."""
    if _CP in sys.modules:
        return pickle.loads(payload, buffers=buffers)
    _share_on_import()
    return _ValueUnpickler(io.BytesIO(payload), buffers=buffers).load()


class _ValueUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == _CP and name in _LOAD_SIDE:  # ours for the whole payload (one _empty_cell_value)
            return _LOAD_SIDE[name]
        return super().find_class(module, name)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == _CP and name in _LOAD_SIDE:
            return _LOAD_SIDE[name]
        if module.partition(".")[0] == "cloudpickle":
            raise _Fallback(f"{module}.{name}")
        return super().find_class(module, name)


# -- cloudpickle 3's load side (cloudpickle/cloudpickle.py, BSD-3-Clause), same behaviour ------------


def _lookup_class_or_track(class_tracker_id: str | None, class_def: type) -> type:
    if class_tracker_id is not None:
        with _LOCK:
            known = _BY_ID.get(class_tracker_id)
            if known is None:
                _BY_ID[class_tracker_id] = class_def
                tracked = getattr(_attempt, "tracked", None)
                if tracked is not None:
                    tracked.append((class_tracker_id, class_def))
            else:
                class_def = known
            _BY_CLASS[class_def] = class_tracker_id
    return class_def


def _make_skeleton_class(
    type_constructor: type, name: str, bases: tuple, type_kwargs: dict, class_tracker_id: str | None, extra: Any
) -> type:
    type_kwargs = {sys.intern(k): v for k, v in type_kwargs.items()}
    skeleton_class = types.new_class(name, bases, {"metaclass": type_constructor}, lambda ns: ns.update(type_kwargs))
    return _lookup_class_or_track(class_tracker_id, skeleton_class)


def _class_setstate(obj: type, state: tuple) -> type:
    state, _slotstate = state
    registry = None
    for attrname, attr in state.items():
        if attrname == "_abc_impl":
            registry = attr
        else:
            setattr(obj, attrname, attr)
    if sys.version_info >= (3, 13) and "__firstlineno__" in state:
        obj.__firstlineno__ = state["__firstlineno__"]  # type: ignore[attr-defined]
    if registry is not None:
        for subclass in registry:
            obj.register(subclass)  # type: ignore[attr-defined]
    return obj


def _make_function(code: types.CodeType, globals: dict, name: str, argdefs: Any, closure: Any) -> types.FunctionType:
    globals["__builtins__"] = __builtins__
    return types.FunctionType(code, globals, name, argdefs, closure)


def _function_setstate(obj: types.FunctionType, state: tuple) -> None:
    state, slotstate = state
    obj.__dict__.update(state)
    obj_globals = slotstate.pop("__globals__")
    obj_closure = slotstate.pop("__closure__")
    slotstate.pop("_cloudpickle_submodules")
    obj.__globals__.update(obj_globals)
    obj.__globals__["__builtins__"] = __builtins__
    if obj_closure is not None:
        for i, cell in enumerate(obj_closure):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            obj.__closure__[i].cell_contents = value  # type: ignore[index]
    for k, v in slotstate.items():
        setattr(obj, k, v)


def _builtin_type(name: str) -> Any:
    return type if name == "ClassType" else getattr(types, name)


def _subimport(name: str) -> types.ModuleType:
    __import__(name)
    return sys.modules[name]


def _dynamic_subimport(name: str, vars: dict) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(vars)
    mod.__dict__["__builtins__"] = builtins.__dict__
    return mod


class _EmptyCell:
    """cloudpickle's ``_empty_cell_value`` (one payload is loaded wholly here or wholly by cloudpickle)."""


_EMPTY = _EmptyCell()


def _make_empty_cell() -> types.CellType:
    if False:  # a cell the compiler makes empty
        cell = None
    return (lambda: cell).__closure__[0]  # type: ignore[index]


def _make_cell(value: Any = _EMPTY) -> types.CellType:
    cell = _make_empty_cell()
    if value is not _EMPTY:
        cell.cell_contents = value
    return cell


_LOAD_SIDE = {
    "_make_skeleton_class": _make_skeleton_class,
    "_class_setstate": _class_setstate,
    "_make_function": _make_function,
    "_function_setstate": _function_setstate,
    "_builtin_type": _builtin_type,
    "subimport": _subimport,
    "dynamic_subimport": _dynamic_subimport,
    "_make_empty_cell": _make_empty_cell,
    "_make_cell": _make_cell,
    "_empty_cell_value": _EMPTY,
}


# -- cloudpickle imported later: it gets these tables ------------------------------------------------


class _ShareTrackers:
    """A ``sys.meta_path`` finder for ``cloudpickle.cloudpickle`` alone: its module, once executed, gets
    this module's class trackers and their lock (its functions read them as globals at each call)."""

    @classmethod
    def find_spec(cls, name: str, path: Any = None, target: Any = None) -> Any:
        if name != _CP:
            return None
        _remove_finder()
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _SharingLoader(spec.loader)
        return spec


class _SharingLoader:
    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename, ...: the real loader's
        return getattr(self._loader, name)

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self._loader.exec_module(module)
        with _LOCK:
            module.__dict__.update(
                _DYNAMIC_CLASS_TRACKER_BY_CLASS=_BY_CLASS,
                _DYNAMIC_CLASS_TRACKER_BY_ID=_BY_ID,
                _DYNAMIC_CLASS_TRACKER_LOCK=_LOCK,
            )


def _share_on_import() -> None:
    with _LOCK:
        if _ShareTrackers not in sys.meta_path:
            sys.meta_path.insert(0, _ShareTrackers)  # type: ignore[arg-type]


def _remove_finder() -> None:
    try:
        sys.meta_path.remove(_ShareTrackers)  # type: ignore[arg-type]
    except ValueError:
        pass
