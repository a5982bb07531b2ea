"""Acceptance tests of API.md, fourth pass: results held past max_expire_time, messages through a server,
a checkpoint of public attributes only, and zero / wrong values of the server's settings."""

from __future__ import annotations

import signal
import time

import pytest

import mesh
from test_contract_cli import Start


class Maker(metaclass=mesh.RpcMeta):
    def value(self, i):
        return i

    def echo(self, m):
        return m

    @mesh.stream_func
    def items(self, n):
        yield from range(n)


def on(srv):
    return {"host": srv.host, "port": srv.port}


def test_results_still_held_by_futures_outlive_max_expire_time_and_max_len(spawn_server):
    srv = spawn_server(port=0, max_expire_time=0.2, max_len=3)
    m = Maker(to_dist=on(srv))
    futs = [m.value.remote(i) for i in range(20)]
    streams = [m.items(3) for _ in range(4)]
    done, pending = mesh.wait(futs, num_returns=20, timeout=20)
    assert pending == []
    end = time.monotonic() + 0.8  # four times max_expire_time passes while the futures are held
    while time.monotonic() < end:
        time.sleep(0.05)
    assert [f.result(timeout=10) for f in futs] == list(range(20))
    assert [s.result(timeout=10) for s in streams] == [[0, 1, 2]] * 4


def test_a_message_through_a_server_comes_back_equal_with_every_field(server):
    m = mesh.Msg("ann", {"k": [1, 2]}, role="user", url=["http://a/x.png"], metadata={"trace": 1}, mood="calm")
    back = Maker(to_dist=on(server)).echo(m)
    assert back == m and back is not m
    assert (back.id, back.timestamp, back.name, back.content, back.role, back.url, back.metadata) == (
        m.id, m.timestamp, m.name, m.content, m.role, m.url, m.metadata)
    assert back.mood == "calm" and back.to_dict() == m.to_dict()
    assert mesh.Msg.from_dict(back.to_dict()) == m


class Mixed(metaclass=mesh.RpcMeta):
    def __init__(self, start=0):
        self.count = start
        self.tags = []
        self._calls = 0  # private: not part of the checkpoint, rebuilt by the constructor

    def add(self, n, tag):
        self._calls += 1
        self.count += n
        self.tags.append(tag)
        return self.count, self._calls


def test_a_restored_object_has_its_public_attributes_and_its_private_ones_from_the_constructor(tmp_path, monkeypatch):
    store = str(tmp_path / "states")
    monkeypatch.setenv("MESH_STATE_STORE", store)  # the child server that takes it over uses the same store
    s = Start("--no-advertise", "--state-store", store)
    try:
        d = Mixed(5, to_dist={"host": s.host, "port": s.port, "checkpoint": True, "max_restarts": 1})
        assert d.add(1, "a") == (6, 1) and d.add(1, "b") == (7, 2)
        s.proc.send_signal(signal.SIGKILL)
        s.stop(signal.SIGKILL)
        try:
            after = d.add(1, "c")
        except mesh.ServerUnavailable:
            after = d.add(1, "c")
        assert after == (8, 1)  # count restored; _calls as the constructor made it
        assert d.tags == ["a", "b", "c"] and d.count == 8
    finally:
        s.stop(signal.SIGKILL)


@pytest.mark.parametrize("settings", [{"capacity": 0}, {"capacity": -2}, {"max_len": 0}, {"max_expire_time": 0},
                                      {"max_expire_time": -1}, {"port": -1}, {"port": 65536}, {"pool_type": "x"}])
def test_zero_and_negative_server_settings_are_refused_clearly(settings):
    key = next(iter(settings))
    with pytest.raises((ValueError, TypeError)) as err:
        mesh.AgentServer(advertise=False, **settings).launch(in_subprocess=False)
    assert key.split("_")[0] in str(err.value).lower()


def test_a_server_not_launched_yet_can_be_shut_down_and_launched_once(server):
    fresh = mesh.AgentServer(port=0, advertise=False)
    fresh.shutdown()  # nothing to stop: harmless
    with pytest.raises((RuntimeError, mesh.MeshError)):
        server.launch(in_subprocess=False)  # already running: an error, not a second server
    m = Maker(to_dist=on(server))
    assert m.value(3) == 3


PLAIN_PROCESS = """
import sys
import mesh

class K(metaclass=mesh.RpcMeta):
    def f(self, x):
        return x + 1

    @mesh.stream_func
    def g(self):
        yield 1

srv = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=False)
k = K(to_dist={"host": srv.host, "port": srv.port})
assert k.f(1) == 2 and k.g().result(timeout=20) == [1] and k.f.remote(2).result(timeout=20) == 3
a = mesh.AgentBase("plain", to_dist={"host": srv.host, "port": srv.port})
assert a.name == "plain"
with mesh.deadline(10):
    assert k.f(3) == 4
heavy = ("autogen_core", "a2a", "starlette", "uvicorn", "sse_starlette", "prometheus_client", "opentelemetry",
         "httpx", "redis")
print(sorted({m.split(".")[0] for m in sys.modules} & set(heavy)))
mesh.shutdown()
srv.shutdown()
"""


def test_extras_are_declared_and_a_process_that_does_not_use_them_imports_none():
    import os
    import subprocess
    import sys
    import tomllib

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml"), "rb") as fh:
        extras = tomllib.load(fh)["project"]["optional-dependencies"]
    assert {"autogen", "http", "otel"} <= set(extras)
    out = subprocess.run([sys.executable, "-c", PLAIN_PROCESS], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "MESH_DISCOVERY": "0"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
