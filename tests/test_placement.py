"""to_dist() without a host: discovery, least-loaded placement, liveness, child fallback."""

from __future__ import annotations

import json
import os
import time

import pytest

import mesh
from agents_lib import Producer, Store
from conftest import run_cli, wait_until


@pytest.fixture
def discovery_on(monkeypatch):
    monkeypatch.setenv("MESH_DISCOVERY", "1")
    mesh._core.settings.reset()
    yield


def agents_on(srv) -> int:
    client = mesh.client._client.get_client()
    return len(mesh.client._replies.decode_reply(client.request(srv.address, {"op": "status"}, None, timeout=5).result(10), srv.address)["agents"])


def test_to_dist_spreads_agents_over_discovered_servers(discovery_on, spawn_server):
    a = spawn_server(port=0, capacity=8, advertise=True)
    b = spawn_server(port=0, capacity=8, advertise=True)
    stores = [Store().to_dist() for _ in range(6)]
    assert {s._mesh_address for s in stores} == {a.address, b.address}
    assert agents_on(a) == agents_on(b) == 3
    assert [s.add(1) for s in stores] == [1] * 6
    # no child server was needed: the spare started while discovery ran is stopped in the background
    # once it is up (under load that can come after the calls above)
    assert not mesh._placement._child_used
    wait_until(lambda: mesh._placement._child is None, timeout=20)


def test_servers_lists_live_servers_and_drops_stopped_ones(discovery_on, spawn_server):
    a = spawn_server(port=0, capacity=4, advertise=True, name="alpha")
    b = spawn_server(port=0, capacity=6, advertise=True, name="beta")
    found = {s.name: s for s in mesh.servers(timeout=0.5)}
    assert set(found) >= {"alpha", "beta"}
    assert found["alpha"].address == a.address and found["alpha"].capacity == 4
    assert found["beta"].capacity == 6 and found["beta"].load == 0
    b.shutdown()
    wait_until(lambda: "beta" not in {s.name for s in mesh.servers(timeout=0)}, timeout=5)
    a._proc.kill()  # no goodbye: the ping decides
    a._proc.wait(10)
    wait_until(lambda: "alpha" not in {s.name for s in mesh.servers(timeout=0)}, timeout=10)


def test_killed_server_is_avoided_by_new_agents(discovery_on, spawn_server):
    a = spawn_server(port=0, advertise=True)
    b = spawn_server(port=0, advertise=True)
    Store().to_dist()
    a._proc.kill()  # still in the one-second ping cache: the first placement there fails and moves on
    a._proc.wait(10)
    stores = [Store().to_dist() for _ in range(3)]
    assert {s._mesh_address for s in stores} == {b.address}


def test_no_server_found_falls_back_to_the_child_server(discovery_on):
    mesh.init(discovery_wait=0.2)
    t = time.perf_counter()
    p = Producer().to_dist()
    assert p.pid() != os.getpid()
    assert time.perf_counter() - t < 5
    q = Producer().to_dist()
    assert q.pid() == p.pid()  # one child, reused


def test_discovery_can_be_turned_off(spawn_server):
    spawn_server(port=0, advertise=True)
    p = Producer().to_dist()  # MESH_DISCOVERY=0 (conftest): child server
    assert p._mesh_address == mesh._placement._child.address


def test_cli_list(discovery_on, spawn_server):
    spawn_server(port=0, advertise=True, name="listed")
    spawn_server(port=0, advertise=False, name="hidden")
    out = run_cli("list", "--json", "--timeout", "0.5")
    assert out.returncode == 0, out.stderr
    names = {s["name"] for s in json.loads(out.stdout)}
    assert "listed" in names and "hidden" not in names
    table = run_cli("list", "--timeout", "0.5")
    assert "listed" in table.stdout and "ADDRESS" in table.stdout
