"""Issue 16, discovery side: ``mesh.servers()`` returns once the answers are in, and the first
``to_dist()`` with discovery on races the child server against discovery (no fixed wait)."""

from __future__ import annotations

import time

import pytest

import mesh
from conftest import wait_until
from mesh import _placement


class PerfEcho(metaclass=mesh.RpcMeta):
    def echo(self, x):
        return x


@pytest.fixture
def discovery_on(monkeypatch):
    monkeypatch.setenv("MESH_DISCOVERY", "1")
    mesh._core.settings.reset()


def test_servers_returns_before_its_timeout_when_every_server_answered(discovery_on, spawn_server):
    a = spawn_server(port=0, capacity=4, advertise=True, name="alpha")
    b = spawn_server(port=0, capacity=4, advertise=True, name="beta")
    t = time.monotonic()
    found = {s.name: s for s in mesh.servers(timeout=20)}
    elapsed = time.monotonic() - t
    assert {"alpha", "beta"} <= set(found)
    assert found["alpha"].address == a.address and found["beta"].address == b.address
    assert elapsed < 10, f"servers(timeout=20) took {elapsed:.1f} s with every server answering"


def test_servers_with_nothing_announced_returns_empty_before_its_timeout(discovery_on):
    t = time.monotonic()
    assert mesh.servers(timeout=20) == []
    assert time.monotonic() - t < 10


def test_servers_still_waits_for_a_slow_ping_within_its_timeout(discovery_on, spawn_server):
    """A server that answers its ping late is still listed (the listing waits for the answers)."""
    a = spawn_server(port=0, capacity=4, advertise=True, name="slowpoke")
    a._proc.send_signal(19)  # SIGSTOP: the ping is not answered until it continues
    try:
        assert mesh.servers(timeout=0.3) == []  # not answering: left out, after the ping's own timeout
        a._proc.send_signal(18)  # SIGCONT
        found = [s.name for s in mesh.servers(timeout=5)]
        assert found == ["slowpoke"]
    finally:
        a._proc.send_signal(18)


def test_first_to_dist_without_servers_uses_the_child_started_in_parallel(discovery_on):
    objs = [PerfEcho().to_dist() for _ in range(3)]
    child = _placement.child()
    assert child is not None
    assert {o._mesh_address for o in objs} == {child.address}
    assert [o.echo(i) for i, o in enumerate(objs)] == [0, 1, 2]


def test_first_to_dist_prefers_a_discovered_server_and_stops_the_spare_child(discovery_on, spawn_server):
    srv = spawn_server(port=0, capacity=4, advertise=True)
    obj = PerfEcho().to_dist()
    assert obj._mesh_address == srv.address
    assert obj.echo("x") == "x"
    # the spare child started for the race is stopped again, as nothing was placed on it
    wait_until(lambda: _placement.child() is None, timeout=20)


def test_a_known_server_slow_to_answer_a_ping_is_kept_with_its_connection(discovery_on, spawn_server):
    """Busy (here: stopped briefly), not gone: a server that answered before stays listed and keeps
    its connection, so the creations and calls queued there are not failed by the listing."""
    mesh.init(heartbeat_timeout=30)  # the transport's heartbeat, not a ping's timeout, tells a dead server
    srv = spawn_server(port=0, capacity=4, advertise=True, name="busy")
    assert [s.name for s in mesh.servers(timeout=5)] == ["busy"]
    obj = PerfEcho(to_dist={"host": srv.host, "port": srv.port})
    assert obj.echo(0) == 0  # created (to_dist() does not wait for the constructor)
    srv._proc.send_signal(19)  # SIGSTOP: the next ping times out
    try:
        pending = obj.echo.remote("still here")
        for _ in range(2):  # each listing pings it again, and waits out the ping's timeout
            assert [s.name for s in mesh.servers(timeout=0.2)] == ["busy"]
    finally:
        srv._proc.send_signal(18)
    assert pending.result(timeout=30) == "still here"
    assert obj.echo(1) == 1
