"""Start-up paths (issue 16, target 0): the spare child spawned at the first ``to_dist()`` with no
host, and the class's first pickle by value without ``dis`` (``mesh._globalops``)."""

from __future__ import annotations

import dis
import importlib
import inspect
import sys
import threading
import types

import pytest
from cloudpickle import cloudpickle as _cp

import mesh
from conftest import wait_until
from mesh import _byvalue, _globalops, _placement

GLOBAL_OPS = {dis.opmap["LOAD_GLOBAL"], dis.opmap["STORE_GLOBAL"], dis.opmap["DELETE_GLOBAL"]}


class SpareEcho(metaclass=mesh.RpcMeta):
    def echo(self, x):
        return x

    def pid(self):
        import os

        return os.getpid()


@pytest.fixture
def spawned(monkeypatch):
    """Discovery on (as users run it), and the processes the placement spawns for its child servers."""
    monkeypatch.setenv("MESH_DISCOVERY", "1")
    mesh._core.settings.reset()
    procs: list = []
    real = _placement.spawn_process

    def spy(options):
        proc = real(options)
        procs.append(proc)
        return proc

    monkeypatch.setattr(_placement, "spawn_process", spy)
    return procs


# ------------------------------------------------------------------ the global names of code
def _codes(code: types.CodeType):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def _by_dis(code: types.CodeType) -> list[str]:
    return [i.argval for i in dis.get_instructions(code) if i.opcode in GLOBAL_OPS]


@pytest.mark.parametrize("module", ["json.decoder", "argparse", "typing", "dataclasses", "asyncio.base_events", "mesh._placement"])
def test_global_names_are_those_dis_gives(module):
    source = inspect.getsource(importlib.import_module(module))
    codes = list(_codes(compile(source, module, "exec")))
    assert len(codes) > 5
    for code in codes:
        assert list(_globalops.global_names(code)) == _by_dis(code), code.co_name


def test_global_names_through_extended_args():
    """Name indexes above 255 and 65535 (EXTENDED_ARG prefixes), stores and deletes."""
    names = [f"g{i}" for i in range(70_000)]
    body = "".join(f"    {n} = {n} + 1\n" for n in names[::97]) + "    del g69999\n"
    code = compile(f"def f():\n    global {', '.join(names)}\n{body}", "x", "exec").co_consts[0]
    got = list(_globalops.global_names(code))
    assert got == _by_dis(code)
    assert got[-1] == "g69999" and len(got) == 2 * len(names[::97]) + 1


@pytest.mark.skipif(sys.version_info[:2] not in _globalops._KNOWN, reason="cloudpickle's own walk elsewhere")
def test_cloudpickle_walks_global_names_and_a_class_by_value_keeps_its_globals():
    assert _cp._walk_global_ops is _globalops.global_names
    module = types.ModuleType("init4_byvalue_mod")
    module.__file__ = "/nonexistent/init4_byvalue_mod.py"
    exec(  # noqa: S102 - a module of its own, pickled by value
        "FACTOR = 7\n"
        "def helper(x):\n    return x * FACTOR\n"
        "class Scaled:\n    def run(self, x):\n        return helper(x) + len([FACTOR for _ in range(2)])\n",
        module.__dict__,
    )
    sys.modules[module.__name__] = module
    try:
        blob = _byvalue.blob(module.Scaled)
    finally:
        del sys.modules[module.__name__]
    import pickle

    assert pickle.loads(blob)().run(3) == 23  # helper and FACTOR travelled with the class


# ------------------------------------------------------------------ the spare child
def test_no_server_found_uses_the_one_child_spawned_at_the_first_to_dist(spawned):
    objs = [SpareEcho().to_dist() for _ in range(5)]
    child = _placement.child()
    assert child is not None and len(spawned) == 1 and child._proc is spawned[0]
    assert {o._mesh_address for o in objs} == {child.address}
    assert [o.echo(i) for i, o in enumerate(objs)] == list(range(5))
    assert objs[0].pid() == spawned[0].pid


def test_first_to_dists_from_two_threads_start_one_child(spawned):
    start = threading.Barrier(2)
    got: list = []

    def place() -> None:
        start.wait(10)
        got.append(SpareEcho().to_dist())

    threads = [threading.Thread(target=place) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got) == 2 and len(spawned) == 1
    assert {o._mesh_address for o in got} == {_placement.child().address}
    assert [o.echo(i) for i, o in enumerate(got)] == [0, 1]


def test_a_found_server_wins_and_the_spare_child_process_exits(spawn_server, spawned):
    srv = spawn_server(port=0, capacity=4, advertise=True)
    obj = SpareEcho().to_dist()
    assert obj._mesh_address == srv.address
    assert obj.echo("x") == "x"
    assert len(spawned) == 1  # the spare was started for the race...
    wait_until(lambda: _placement.child() is None, timeout=20)
    wait_until(lambda: spawned[0].poll() is not None, timeout=20)  # ...and its process is gone
    assert obj.echo("y") == "y"


def test_shutdown_while_the_spare_starts_stops_its_process(spawned):
    thread = _placement._start_spare()
    assert thread is not None and len(spawned) == 1
    mesh.shutdown()  # waits for the spare's start (it holds the child lock), then stops it
    assert _placement.child() is None
    wait_until(lambda: spawned[0].poll() is not None, timeout=20)
    thread.join(20)
    assert not thread.is_alive()


def test_discovery_off_spawns_the_child_once(spawned, monkeypatch):
    monkeypatch.setenv("MESH_DISCOVERY", "0")
    mesh._core.settings.reset()
    objs = [SpareEcho().to_dist() for _ in range(3)]
    assert len(spawned) == 1 and objs[0].pid() == spawned[0].pid
    assert [o.echo(i) for i, o in enumerate(objs)] == [0, 1, 2]
