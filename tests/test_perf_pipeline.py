"""Issue 16, target 4: creation pipelines under plain ``to_dist()``.

The first creation of a class on a server waits for the connection only (an unreachable server
or a refused secret fail at ``to_dist()``); it and later ones return before the server answered,
and their errors (a constructor that raised, a class the server cannot load) surface at the
object's first use, naming the creation.
"""

from __future__ import annotations

import os
import time

import pytest

import mesh
from mesh import _pipeline, _placement
from mesh.client._proxy import RpcObject


class Gate(metaclass=mesh.RpcMeta):
    """Its constructor waits until ``path`` exists (at most 30 s): a creation that cannot finish yet."""

    def __init__(self, path: str, fail: bool = False) -> None:
        deadline = time.monotonic() + 30
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        if fail:
            raise ValueError("refusing to be built")
        self.n = 0

    def add(self, k: int) -> int:
        self.n += k
        return self.n

    @mesh.async_func
    def add_later(self, k: int) -> int:
        self.n += k
        return self.n


class User(metaclass=mesh.RpcMeta):
    def poke(self, other: RpcObject) -> int:
        return other.add(10)


def on(srv):
    return {"host": srv.host, "port": srv.port}


def test_later_creations_return_before_their_constructors_ran(spawn_server, tmp_path):
    srv = spawn_server(port=0, capacity=8)
    gate = tmp_path / "open"
    gate.touch()
    first = Gate(str(gate), to_dist=on(srv))
    assert first.add(0) == 0  # its first use waits for the reply: the class is proven there
    assert type(first) is RpcObject
    gate.unlink()
    later = [Gate(str(gate), to_dist=on(srv)) for _ in range(3)]  # would each block 30 s if they waited
    assert _pipeline.pending() == 3  # none answered: the constructors wait for the gate
    assert all(isinstance(p, RpcObject) for p in later)
    gate.touch()
    results = [p.add_later(1) for p in later]  # first use: waits for the create's answer
    assert [r.result(timeout=30) for r in results] == [1, 1, 1]
    assert [p.add(2) for p in later] == [3, 3, 3]
    assert _pipeline.pending() == 0
    assert all(type(p) is RpcObject for p in later)  # plain proxies once answered


def test_a_pipelined_constructor_error_surfaces_at_first_use_and_names_the_creation(spawn_server, tmp_path):
    srv = spawn_server(port=0, capacity=8)
    gate = tmp_path / "open"
    gate.touch()
    Gate(str(gate), to_dist=on(srv))
    bad = Gate(str(gate), fail=True, to_dist=on(srv))  # returns: the error is not known yet
    with pytest.raises(mesh.RemoteError) as info:
        bad.add(1)
    assert info.value.remote_type == "ValueError"
    assert isinstance(info.value, ValueError)
    assert "refusing to be built" in str(info.value)
    assert f"creating Gate on {srv.address}" in str(info.value)
    assert "first use" in str(info.value)
    with pytest.raises(mesh.RemoteError, match="refusing to be built"):  # every use, not only the first
        bad.add_later(1)
    with pytest.raises(mesh.AgentNotFound, match="never created"):
        mesh.delete(bad)
    good = Gate(str(gate), to_dist=on(srv))  # the server and the class are fine
    assert good.add(5) == 5


def test_first_creation_still_fails_at_to_dist(tmp_path):
    with pytest.raises(mesh.ServerUnavailable):
        Gate(str(tmp_path), to_dist={"host": "127.0.0.1", "port": 1})


def test_a_pending_proxy_passed_to_another_object_is_created_first(spawn_server, tmp_path):
    srv = spawn_server(port=0, capacity=8)
    gate = tmp_path / "open"
    gate.touch()
    Gate(str(gate), to_dist=on(srv))
    target = Gate(str(gate), to_dist=on(srv))
    user = User(to_dist=on(srv))
    assert user.poke(target) == 10
    assert target.add(1) == 11


def test_a_server_that_asks_for_the_class_gets_it_at_first_use(spawn_server):
    srv = spawn_server(port=0, capacity=8)

    class Local(metaclass=mesh.RpcMeta):  # a local class: the server can only get it by value
        def __init__(self, x: int) -> None:
            self.x = x

        def get(self) -> int:
            return self.x

    _placement._proven.add((srv.address, Local))  # as if created before (e.g. a server restarted there)
    obj = Local(7, to_dist=on(srv))
    assert type(obj) is not RpcObject or _pipeline.pending() == 0
    assert obj.get() == 7
    assert Local(8, to_dist=on(srv)).get() == 8


def test_many_pipelined_creations_all_answer(server):
    objs = [Gate("/", to_dist=on(server)) for _ in range(300)]
    assert [o.add(1) for o in objs] == [1] * 300
    assert _pipeline.pending() == 0


def test_pipelined_creations_on_a_discovered_server_that_died_move_to_a_live_one(monkeypatch, spawn_server, tmp_path):
    monkeypatch.setenv("MESH_DISCOVERY", "1")
    mesh._core.settings.reset()
    a = spawn_server(port=0, advertise=True)
    b = spawn_server(port=0, advertise=True)
    first = [Gate("/").to_dist() for _ in range(2)]  # one on each: both (server, class) pairs proven
    assert {o._mesh_address for o in first} == {a.address, b.address}
    a._proc.kill()  # still listed by the ping cache for a moment
    a._proc.wait(10)
    later = [Gate("/").to_dist() for _ in range(4)]
    assert [o.add(1) for o in later] == [1] * 4
    assert {o._mesh_address for o in later} == {b.address}


def test_objects_of_a_class_sent_by_value_share_one_class_on_the_server(spawn_server):
    srv = spawn_server(port=0, capacity=8)

    class Local(metaclass=mesh.RpcMeta):  # only by value: the server cannot import it
        def cls_id(self) -> int:
            return id(type(self))

    objs = [Local(to_dist=on(srv)) for _ in range(4)]
    assert len({o.cls_id() for o in objs}) == 1  # unpickled once, not once per object
