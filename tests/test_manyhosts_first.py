"""Issue 16 target 5: with many discovered servers, the first object of a class on each further server
does not wait for that server's answer (the class was made fine on another one, and the server answered
our ping): it is pipelined like the later ones, carrying the class as a fallback."""

from __future__ import annotations

import os
import sys
import time
import uuid

import pytest

import mesh
from mesh import _placement

pytestmark = pytest.mark.timeout(90)


class Gated(metaclass=mesh.RpcMeta):
    """Its constructor waits until ``path`` exists (at most 30 s); ``fail``: then it raises."""

    def __init__(self, path: str, fail: bool = False) -> None:
        deadline = time.monotonic() + 30
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        if fail:
            raise ValueError("refusing to be built here")
        self.pid = os.getpid()

    def where(self) -> int:
        return self.pid


@pytest.fixture
def discovery_on(monkeypatch):
    monkeypatch.setenv("MESH_DISCOVERY", "1")
    mesh._core.settings.reset()


def test_the_first_object_on_each_further_server_returns_before_its_constructor_ran(discovery_on, spawn_server,
                                                                                     tmp_path):
    servers = [spawn_server(port=0, capacity=8, advertise=True) for _ in range(3)]
    gate = tmp_path / "open"
    gate.touch()
    first = Gated(str(gate), to_dist=True)  # the class's very first: waits for its server's answer
    gate.unlink()
    t = time.monotonic()
    further = [Gated(str(gate), to_dist=True) for _ in range(2)]  # each on another server, whose constructor waits
    returned = time.monotonic() - t
    assert returned < 20, f"to_dist() on further servers waited for their constructors ({returned:.1f} s)"
    gate.touch()  # (reading a pending proxy's address waits for its answer: only now)
    assert {first._mesh_address, *(o._mesh_address for o in further)} == {s.address for s in servers}
    assert len({first.where(), *(o.where() for o in further)}) == 3
    assert all((s.address, Gated) in _placement._proven for s in servers)


def test_a_constructor_error_on_a_further_server_shows_at_first_use(discovery_on, spawn_server, tmp_path):
    a, b = spawn_server(port=0, capacity=8, advertise=True), spawn_server(port=0, capacity=8, advertise=True)
    gate = tmp_path / "open"
    gate.touch()
    good = Gated(str(gate), to_dist=True)
    bad = Gated(str(gate), fail=True, to_dist=True)  # placed on the other server: returns, the error comes later
    assert {good._mesh_address, bad._mesh_address} == {a.address, b.address}
    with pytest.raises(mesh.RemoteError, match="refusing to be built here") as info:
        bad.where()
    assert f"creating Gated on {bad._mesh_address}" in str(info.value)
    assert good.where() != 0
    again = [Gated(str(gate), to_dist=True) for _ in range(4)]  # both servers still take the class
    assert {o._mesh_address for o in again} == {a.address, b.address}
    assert all(o.where() for o in again)


MODULE = (
    "import os\n"
    "import mesh\n"
    "class Where(metaclass=mesh.RpcMeta):\n"
    "    def __init__(self, k=0):\n"
    "        self.k = k\n"
    "    def where(self):\n"
    "        return os.getpid(), self.k\n"
)


def test_a_class_further_servers_cannot_import_travels_by_value_to_each(discovery_on, spawn_server, tmp_path,
                                                                         monkeypatch):
    servers = [spawn_server(port=0, capacity=8, advertise=True) for _ in range(3)]  # before the module exists
    name = f"further_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__(name)
    where = sys.modules[name].Where
    objs = [where(k).to_dist() for k in range(30)]  # the first per server, then the ones sent before its answer
    assert sorted(o.where()[1] for o in objs) == list(range(30))
    assert {o._mesh_address for o in objs} == {s.address for s in servers}
    assert len({o.where()[0] for o in objs}) == 3
    assert all((s.address, where) in _placement._by_value for s in servers)
