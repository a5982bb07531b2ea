"""The first creation of a class on a server: one round trip, whether or not the server can import it.

It carries the class by value as a fallback (the user's own modules only); the server imports the
class if it can, else takes the fallback and says so, and later creations send it by value.
"""

from __future__ import annotations

import os
import sys
import uuid

import msgpack
import pytest

import mesh
from mesh import _byvalue, _create_req, _placement

pytestmark = pytest.mark.timeout(60)

MODULE = (
    "import os\n"
    "import mesh\n"
    "WHERE = os.getpid()\n"
    "class Where(metaclass=mesh.RpcMeta):\n"
    "    def __init__(self, k=0):\n"
    "        self.k = k\n"
    "    def where(self):\n"
    "        return WHERE, self.k\n"
)


def _module(tmp_path, monkeypatch):
    name = f"first_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__(name)
    return sys.modules[name]


@pytest.fixture
def creates(monkeypatch):
    """The ``create`` requests sent (fallback or not), in order."""
    sent: list[bool] = []
    real = _placement._send_create

    def counting(*args, **kwargs):
        sent.append(kwargs.get("fallback") is not None or (len(args) > 11 and args[11] is not None))
        return real(*args, **kwargs)

    monkeypatch.setattr(_placement, "_send_create", counting)
    monkeypatch.setattr(_create_req, "_send_create", counting)  # the first creation (first_pipelined)
    return sent


def test_a_class_the_server_cannot_import_is_created_in_one_round_trip(spawn_server, tmp_path, monkeypatch, creates):
    srv = spawn_server(port=0)  # started before the module exists on any path it knows
    mod = _module(tmp_path, monkeypatch)
    first = mod.Where(1, to_dist={"host": srv.host, "port": srv.port})
    assert creates == [True]  # one create, carrying the fallback: no needclass and resend
    assert (first._mesh_address, mod.Where) in _placement._by_value  # the server said it took the fallback
    more = [mod.Where(k, to_dist={"host": srv.host, "port": srv.port}) for k in range(2, 5)]  # pipelined, by value
    assert [o.where()[1] for o in [first, *more]] == [1, 2, 3, 4]
    assert first.where()[0] == os.getpid()  # the module came by value: its globals are ours


def test_a_class_the_server_can_import_is_still_imported(spawn_server, tmp_path, monkeypatch, creates):
    mod = _module(tmp_path, monkeypatch)
    srv = spawn_server(port=0)  # a child server has this process's sys.path: it imports the module
    obj = mod.Where(7, to_dist={"host": srv.host, "port": srv.port})
    assert creates == [True]
    pid, k = obj.where()
    assert k == 7 and pid == srv._proc.pid  # its own import, not our copy by value
    assert (obj._mesh_address, mod.Where) not in _placement._by_value


def test_only_the_users_own_classes_get_a_fallback(tmp_path, monkeypatch):
    mod = _module(tmp_path, monkeypatch)
    assert _byvalue.fallback(mod.Where) == _byvalue.blob(mod.Where)
    assert _byvalue.fallback(msgpack.Timestamp) is None  # an installed package
    assert _byvalue.fallback(uuid.UUID) is None  # the standard library
    assert _byvalue.fallback(mesh.AgentBase) is None  # the mesh's own


def test_the_child_server_gets_no_fallback(monkeypatch, tmp_path, creates):
    mod = _module(tmp_path, monkeypatch)
    monkeypatch.setenv("MESH_DISCOVERY", "0")
    mesh._core.settings.reset()
    obj = mod.Where(3, to_dist=True)  # the child server imports what this process imports
    assert obj.where() == (_placement.child()._proc.pid, 3)
    assert creates == [False]
