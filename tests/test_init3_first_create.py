"""The first creation of a class on a server is pipelined too: ``to_dist()`` waits for the
connection (reachable, our secret), not for the constructor; its errors show at first use.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid

import pytest

import mesh
from mesh import _create_req, _pipeline, _placement
from mesh.client._proxy import RpcObject

pytestmark = pytest.mark.timeout(90)


class Slow(metaclass=mesh.RpcMeta):
    """Its constructor waits until ``path`` exists (at most 30 s), and raises if asked to."""

    def __init__(self, path: str, fail: bool = False) -> None:
        import os

        deadline = time.monotonic() + 30
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        if fail:
            raise ValueError("no thanks")
        self.n = 0

    def add(self, k: int) -> int:
        self.n += k
        return self.n


def on(srv):
    return {"host": srv.host, "port": srv.port}


def test_the_first_creation_returns_before_its_constructor_ran(spawn_server, tmp_path):
    srv = spawn_server(port=0, capacity=4)
    gate = tmp_path / "open"
    t = time.perf_counter()
    first = Slow(str(gate), to_dist=on(srv))  # would block 30 s if it waited for the reply
    assert time.perf_counter() - t < 10
    assert _pipeline.pending() == 1
    gate.touch()
    assert first.add(2) == 2  # its first use waits for the reply
    assert type(first) is RpcObject and _pipeline.pending() == 0


def test_a_first_creations_constructor_error_shows_at_first_use_names_the_class_and_is_logged(
        spawn_server, tmp_path, caplog):
    srv = spawn_server(port=0)
    (tmp_path / "open").touch()
    with caplog.at_level(logging.WARNING, logger="mesh"):
        bad = Slow(str(tmp_path / "open"), fail=True, to_dist=on(srv))
        with pytest.raises(mesh.RemoteError) as info:
            bad.add(1)
    assert isinstance(info.value, ValueError) and info.value.remote_type == "ValueError"
    assert f"creating Slow on {srv.address}" in str(info.value) and "no thanks" in str(info.value)
    assert "first use" in str(info.value)
    with pytest.raises(ValueError, match="no thanks"):  # every use
        bad.add(1)
    with pytest.raises(mesh.AgentNotFound):
        mesh.delete(bad)
    logged = [r.getMessage() for r in caplog.records if "creating Slow" in r.getMessage()]
    assert len(logged) == 1 and "no thanks" in logged[0]
    assert Slow(str(tmp_path / "open"), to_dist=on(srv)).add(3) == 3  # the class and the server are fine


def test_an_unreachable_server_still_fails_at_to_dist_every_time():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    for _ in range(2):  # a failed first creation leaves nothing that would pipeline the next one
        t = time.perf_counter()
        with pytest.raises(mesh.ServerUnavailable):
            Slow("/", to_dist={"host": "127.0.0.1", "port": port})
        assert time.perf_counter() - t < 8
    assert not _placement._trying


def test_a_wrong_secret_still_fails_at_to_dist(spawn_server):
    srv = spawn_server(port=0, secret="right-secret-0123456789")
    mesh.init(secret="wrong-secret-0123456789")
    with pytest.raises(mesh.AuthenticationError):
        Slow("/", to_dist=on(srv))


def test_a_no_code_server_refuses_at_first_use_naming_the_class(spawn_server, tmp_path, monkeypatch):
    name = f"nc_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "import mesh\nclass Mine(metaclass=mesh.RpcMeta):\n    def get(self):\n        return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__(name)
    strict = spawn_server(port=0, no_code=True)
    obj = sys.modules[name].Mine(to_dist=on(strict))
    with pytest.raises(mesh.RemoteError, match="no-code") as info:
        obj.get()
    assert f"creating Mine on {strict.address}" in str(info.value)


def _unimportable(tmp_path, monkeypatch, cls_name: str, first: str) -> type:
    """A class of a module written to ``tmp_path``, importable here but not by the server;
    ``get()`` returns ``(<first>, k)``."""
    name = f"m_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        f"import mesh, os\nclass {cls_name}(metaclass=mesh.RpcMeta):\n"
        "    def __init__(self, k):\n        self.k = k\n"
        f"    def get(self):\n        return {first}, self.k\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__(name)
    return getattr(sys.modules[name], cls_name)


def _fallbacks_sent(monkeypatch) -> list[bool]:
    """For each single ``create`` sent from now on: did it carry the class as a fallback?"""
    sent: list[bool] = []
    real = _create_req._send_create

    def counting(*args, **kwargs):
        sent.append(kwargs.get("fallback") is not None)
        return real(*args, **kwargs)

    monkeypatch.setattr(_create_req, "_send_create", counting)
    monkeypatch.setattr(_placement, "_send_create", counting)
    return sent


def test_creations_sent_before_the_first_is_answered_carry_the_fallback(spawn_server, tmp_path, monkeypatch):
    srv = spawn_server(port=0)  # it cannot import the module below
    cls = _unimportable(tmp_path, monkeypatch, "Where", "os.getpid()")
    sent = _fallbacks_sent(monkeypatch)
    objs = [cls(k, to_dist=on(srv)) for k in range(5)]
    assert [o.get()[1] for o in objs] == list(range(5))
    assert len(sent) <= 5  # no needclass and resend at first use
    assert sent[0] and all(sent)  # those sent before the first reply carried the class too
    assert len({o.get()[0] for o in objs}) == 1


def test_a_burst_before_the_first_answer_sends_a_few_with_the_fallback_then_batches(spawn_server, tmp_path,
                                                                                    monkeypatch):
    srv = spawn_server(port=0)  # it cannot import the module below
    cls = _unimportable(tmp_path, monkeypatch, "Many", "id(type(self))")
    sent = _fallbacks_sent(monkeypatch)
    objs = [cls(k, to_dist=on(srv)) for k in range(60)]
    assert 1 <= len(sent) <= 1 + _create_req._BURST and all(sent)  # the rest went in batches, by value
    got = [o.get() for o in objs]
    assert [k for _, k in got] == list(range(60))
    assert len({c for c, _ in got}) == 1  # one class there


def test_shutdown_with_a_first_creation_in_flight_does_not_hang(spawn_server, tmp_path):
    srv = spawn_server(port=0, capacity=2)
    obj = Slow(str(tmp_path / "never"), to_dist=on(srv))  # its constructor waits 30 s
    t = time.perf_counter()
    mesh.shutdown()
    assert time.perf_counter() - t < 10
    with pytest.raises(mesh.MeshError, match="creating Slow"):
        obj.add(1)


def test_named_and_detached_first_creations_still_wait(spawn_server, tmp_path):
    srv = spawn_server(port=0)
    (tmp_path / "open").touch()
    with pytest.raises(ValueError, match="no thanks"):
        Slow(str(tmp_path / "open"), fail=True, to_dist={**on(srv), "name": "n1"})
    with pytest.raises(ValueError, match="no thanks"):
        Slow(str(tmp_path / "open"), fail=True, to_dist={**on(srv), "detached": True})
