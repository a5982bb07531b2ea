"""An idle server after its first agents loads no heavy module it does not use (issue 16, target 0).

``benchmarks/footprint.py``'s server: ``python -m mesh.server start``, then a fresh process creates
agents of a class the server cannot import (it travels by value) and calls them. Each module a
server imports stays in its memory for its life: cloudpickle (for one class: ~1.2 MiB with
dataclasses, inspect, ast, dis and uuid), dataclasses and inspect (~0.7 MiB), the ctypes package
(~0.15 MiB for one ``mallopt``) are not loaded. Not a size assertion: which modules.
Also: ``transport._byvalue_load`` rebuilds by-value classes as cloudpickle would (one class per
tracker id, shared with cloudpickle once it is loaded), and ``mesh._core.methods``' function kinds
answer as inspect's.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import inspect
import os
import pickle
import subprocess
import sys

import cloudpickle
import pytest

from mesh._core import methods
from test_footprint import _imported_by_start  # the server as footprint.py starts it

pytestmark = pytest.mark.timeout(120)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("cloudpickle", "dataclasses", "inspect", "ast", "dis", "uuid", "ctypes", "asyncio")

_CLIENT = r"""
import sys
sys.path.insert(0, {root!r})
import mesh

class Echo(metaclass=mesh.RpcMeta):  # in __main__: the server cannot import it, it travels by value
    def __init__(self, k=0):
        self.k = k
    def echo(self, s):
        return s, self.k
    @mesh.async_func
    def work(self, x):
        return x

objs = [Echo(i, to_dist={{"host": "127.0.0.1", "port": {port}}}) for i in range(5)]
assert [o.echo(i) for i, o in enumerate(objs)] == [(i, i) for i in range(5)]
assert objs[0].work(7).result(30) == 7
print("ok")
"""


def _server_imports(advertise: bool) -> set[str]:
    """What ``python -m mesh.server start`` imported up to after its first agents (``-X importtime``)."""

    def create(port: int) -> None:
        out = subprocess.run([sys.executable, "-c", _CLIENT.format(root=ROOT, port=port)], capture_output=True,
                             text=True, timeout=60, env={**os.environ, "MESH_DISCOVERY": "0"}, cwd="/")
        assert out.stdout.strip() == "ok", out.stderr

    return _imported_by_start(advertise, then=create)


@pytest.mark.parametrize("advertise", [False, True], ids=["plain", "advertising"])
def test_a_server_with_by_value_agents_loads_no_heavy_module(advertise):
    imported = _server_imports(advertise)
    assert "mesh.server._dispatch" in imported and "mesh._rpc" in imported  # the measure works
    assert "_ctypes" in imported  # the malloc tuning ran
    assert sorted(m for m in imported if m.split(".")[0] in HEAVY) == []


# -- transport._byvalue_load -------------------------------------------------------------------------

_LOAD = r"""
import pickle, sys
sys.path.insert(0, {root!r})
from transport._byvalue_load import loads
blobs = pickle.loads(sys.stdin.buffer.read())
K = loads(blobs["class"])
report = {{"lazy": "cloudpickle" not in sys.modules, "hi": K().hi(), "c": K.c(), "s": K.s(),
           "abc": issubclass(int, K), "cached": loads(blobs["class"]) is K}}
inst = pickle.loads(blobs["instance"])  # loads cloudpickle: its tracker must know K
report["same_class"] = type(inst) is K
import cloudpickle
report["round_trip"] = pickle.loads(cloudpickle.dumps(K)) is K
report["after"] = loads(blobs["class"]) is K
E = loads(blobs["enum"])  # a name of cloudpickle's not in the module: cloudpickle loads it
report["enum"] = [m.name for m in E]
print(report)
"""


def _make_class() -> type:
    class Base:
        def hi(self) -> str:
            return "base"

    class K(Base, abc.ABC):
        x = 3

        def hi(self) -> str:  # super(): a __class__ cell
            return f"k:{super().hi()}{self.x}{len([i for i in range(2)])}"

        @classmethod
        def c(cls) -> int:
            return cls.x

        @staticmethod
        def s() -> str:
            return os.sep

        async def co(self) -> int:
            return 1

    K.register(int)
    return K


def test_a_class_by_value_is_rebuilt_without_cloudpickle_and_shares_its_tracker():
    import enum

    K = _make_class()
    E = enum.Enum("E", "a b")
    E.__module__ = "__main__"
    blobs = {"class": cloudpickle.dumps(K), "instance": cloudpickle.dumps(K()), "enum": cloudpickle.dumps(E)}
    out = subprocess.run([sys.executable, "-c", _LOAD.format(root=ROOT)], input=pickle.dumps(blobs),
                         capture_output=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().strip() == str({
        "lazy": True, "hi": "k:base32", "c": 3, "s": os.sep, "abc": True, "cached": True,
        "same_class": True, "round_trip": True, "after": True, "enum": ["a", "b"],
    })


def test_a_failed_attempt_tracks_nothing_and_cloudpickle_takes_over(monkeypatch):
    import types

    from transport import _byvalue_load as bl

    blob = cloudpickle.dumps(_make_class())
    failed = []

    def refuse(obj, state):
        failed.append(obj)
        raise RuntimeError("midway")

    monkeypatch.setitem(bl._LOAD_SIDE, "_class_setstate", refuse)
    monkeypatch.delitem(sys.modules, "cloudpickle.cloudpickle")  # as in a server: not loaded
    taken_over = []
    monkeypatch.setattr(bl, "pickle", types.SimpleNamespace(Unpickler=pickle.Unpickler,
                                                            loads=lambda data: taken_over.append(data) or "theirs"))
    before = dict(bl._BY_ID)
    try:
        assert bl.loads(blob) == "theirs"
    finally:
        bl._remove_finder()
    assert failed and taken_over == [blob]
    assert dict(bl._BY_ID) == before  # the skeleton it had tracked is forgotten


# -- mesh._core.methods: inspect's answers without inspect ---------------------------------------------


class _Meta(type):
    meta_attr = "m"


class _Owner(metaclass=_Meta):
    def plain(self):
        return 1

    async def coro(self):
        return 1

    def gen(self):
        yield 1

    async def agen(self):
        yield 1

    @staticmethod
    def static():
        return 1

    @classmethod
    def klass(cls):
        return 1

    @property
    def prop(self):
        return 1

    @functools.cached_property
    def cached(self):
        return 1


class _Cythonish:  # a function of another kind: inspect's "function-like" duck type, only with all its attributes
    __name__ = "cy"
    __code__ = _Owner.coro.__code__

    def __call__(self):
        return 1


class _CythonishFull(_Cythonish):
    __defaults__ = None
    __kwdefaults__ = None


_CALLABLES = [
    _Cythonish(), _CythonishFull(),
    _Owner.plain, _Owner.coro, _Owner.gen, _Owner.agen, _Owner().coro, _Owner().agen, _Owner.static, _Owner.klass,
    functools.partial(_Owner.coro, None), functools.partial(functools.partial(_Owner.gen, None)), len, print, _Owner,
    lambda: 1, asyncio.sleep, object(), None, 3, functools.wraps(_Owner.coro)(lambda: 1), _Owner().plain,
]


@pytest.mark.parametrize("fn", _CALLABLES, ids=lambda f: getattr(f, "__qualname__", type(f).__name__))
def test_function_kinds_are_inspects_without_inspect(monkeypatch, fn):
    want = (inspect.iscoroutinefunction(fn), inspect.isasyncgenfunction(fn), inspect.isgeneratorfunction(fn))
    assert (methods.iscoroutinefunction(fn), methods.isasyncgenfunction(fn), methods.isgeneratorfunction(fn)) == want
    monkeypatch.delitem(sys.modules, "inspect")  # as in a server: not loaded
    assert (methods.iscoroutinefunction(fn), methods.isasyncgenfunction(fn), methods.isgeneratorfunction(fn)) == want


@pytest.mark.parametrize("name", ["plain", "coro", "static", "klass", "prop", "cached", "meta_attr", "__init__",
                                  "__class__", "missing"])
def test_getattr_static_of_a_class_is_inspects(monkeypatch, name):
    def both() -> tuple:
        try:
            return ("ok", inspect.getattr_static(_Owner, name))
        except AttributeError:
            return ("missing",)

    def ours() -> tuple:
        try:
            return ("ok", methods.getattr_static(_Owner, name))
        except AttributeError:
            return ("missing",)

    want = both()
    monkeypatch.delitem(sys.modules, "inspect")
    assert ours() == want
