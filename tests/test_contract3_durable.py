"""Acceptance tests of API.md, third pass: durable agents by the method form, async calls, the restart budget."""

from __future__ import annotations

import os
import signal
import time

import pytest

import mesh
from conftest import wait_until
from test_contract_cli import Start


class Counter(metaclass=mesh.RpcMeta):
    def __init__(self, start=0):
        self.n = start

    def add(self, k):
        self.n += k
        return self.n

    @mesh.async_func
    def add_later(self, k):
        time.sleep(0.01)
        self.n += k
        return self.n

    async def add_async(self, k):
        self.n += k
        return self.n

    def pid(self):
        return os.getpid()


@pytest.fixture
def store(tmp_path, monkeypatch):
    path = str(tmp_path / "states")
    monkeypatch.setenv("MESH_STATE_STORE", path)  # the child server's store: the same directory
    return path


def _after_restart(call):
    """A call that was running when the server died fails at most once with ServerUnavailable."""
    try:
        return call()
    except mesh.ServerUnavailable:
        return call()


def test_to_dist_method_form_takes_durable_options(store):
    s = Start("--no-advertise", "--state-store", store)
    try:
        c = Counter(3).to_dist(host=s.host, port=s.port, checkpoint=True, max_restarts=1)
        assert c.add(1) == 4
        s.stop(signal.SIGKILL)
        assert _after_restart(lambda: c.add(1)) == 5
    finally:
        s.stop(signal.SIGKILL)


def test_async_sync_remote_and_coroutine_calls_are_all_checkpointed(store):
    s = Start("--no-advertise", "--state-store", store)
    try:
        c = Counter(0, to_dist={"host": s.host, "port": s.port, "checkpoint": True, "max_restarts": 1})
        assert c.add_later(1).result(timeout=30) == 1
        assert c.add.remote(10).result(timeout=30) == 11
        assert c.add_async(100).result(timeout=30) == 111
        s.stop(signal.SIGKILL)
        assert _after_restart(lambda: c.add(0)) == 111
        assert c.n == 111
    finally:
        s.stop(signal.SIGKILL)


def test_restarts_stop_after_max_restarts(store):
    s = Start("--no-advertise", "--state-store", store)
    try:
        c = Counter(0, to_dist={"host": s.host, "port": s.port, "checkpoint": True, "max_restarts": 1})
        assert c.add(1) == 1
        first = c.pid()
        s.stop(signal.SIGKILL)
        assert _after_restart(lambda: c.add(1)) == 2  # restart 1 of 1: on the child server
        second = c.pid()
        assert second != first
        os.kill(second, signal.SIGKILL)
        wait_until(lambda: not os.path.exists(f"/proc/{second}") or _zombie(second), timeout=10)
        t0 = time.monotonic()
        for _ in range(2):  # no budget left: it fails, every time, and never hangs
            with pytest.raises(mesh.ServerUnavailable):
                c.add(1)
        assert time.monotonic() - t0 < 30
    finally:
        s.stop(signal.SIGKILL)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_restart_goes_to_a_discovered_live_server(tmp_path, monkeypatch):
    path = str(tmp_path / "shared-states")
    monkeypatch.setenv("MESH_DISCOVERY", "1")
    mesh.init(discovery=True)
    a = Start("--name", "c3-a", "--state-store", path, env={"MESH_DISCOVERY": "1"})
    b = Start("--name", "c3-b", "--state-store", path, env={"MESH_DISCOVERY": "1"})
    try:
        wait_until(lambda: {a.address, b.address} <= {s.address for s in mesh.servers(timeout=1.0)}, timeout=20)
        c = Counter(0, to_dist={"host": a.host, "port": a.port, "checkpoint": True, "max_restarts": 1})
        assert c.add(4) == 4
        a.stop(signal.SIGKILL)
        assert _after_restart(lambda: c.add(1)) == 5
        assert c.pid() == b.proc.pid  # on the other live server (discovered), not on a child server
    finally:
        a.stop(signal.SIGKILL)
        b.stop(signal.SIGKILL)


def test_without_discovered_servers_to_dist_falls_back_to_a_child_server(monkeypatch):
    monkeypatch.setenv("MESH_DISCOVERY", "1")
    mesh.init(discovery=True)
    t0 = time.monotonic()
    assert mesh.servers(timeout=0.5) == []
    assert time.monotonic() - t0 < 5
    c = Counter(2).to_dist()
    assert c.add(1) == 3 and c.pid() != os.getpid()
    d = Counter(5, to_dist=True)
    assert d.pid() == c.pid()  # started once and reused
    assert time.monotonic() - t0 < 60
