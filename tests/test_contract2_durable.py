"""Acceptance tests (second pass) of API.md "Durable agents"."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

import mesh
from test_contract_cli import Start


class Journal(metaclass=mesh.RpcMeta):
    """Has state_dict / load_state_dict: those, not the attributes, are what is saved and restored."""

    def __init__(self):
        self.lines = []
        self.restored = False

    def write(self, line):
        self.lines.append(line)
        return len(self.lines)

    async def awrite(self, line):
        await asyncio.sleep(0)
        self.lines.append(line)
        return len(self.lines)

    @mesh.async_func
    def stall(self, seconds):
        time.sleep(seconds)
        return "stalled"

    def read(self):
        return list(self.lines), self.restored

    def state_dict(self):
        return {"lines": list(self.lines)}

    def load_state_dict(self, d):
        self.lines = list(d["lines"])
        self.restored = True


def _kill(s):
    s.proc.send_signal(signal.SIGKILL)
    s.stop(signal.SIGKILL)


def _again(fn):
    """A call made right after the server died may fail once with ServerUnavailable."""
    try:
        return fn()
    except mesh.ServerUnavailable:
        return fn()


@pytest.fixture
def store(tmp_path, monkeypatch):
    path = str(tmp_path / "states")
    monkeypatch.setenv("MESH_STATE_STORE", path)  # the child server's store: the same directory
    return path


def test_state_dict_and_coroutine_calls_are_checkpointed_and_restored(store):
    s = Start("--no-advertise", "--state-store", store)
    try:
        j = Journal(to_dist=mesh.DistConf(host=s.host, port=s.port, checkpoint=True, max_restarts=1))
        assert j.write("a") == 1
        assert j.awrite("b").result(timeout=10) == 2  # a coroutine method's call is saved too
        _kill(s)
        lines, restored = _again(j.read)
        assert lines == ["a", "b"] and restored is True  # restored with load_state_dict()
        assert j.write("c") == 3
    finally:
        s.stop(signal.SIGKILL)


def test_running_call_fails_with_server_unavailable_and_the_next_reaches_the_restored_object(store):
    s = Start("--no-advertise", "--state-store", store)
    try:
        j = Journal(to_dist={"host": s.host, "port": s.port, "checkpoint": True, "max_restarts": 1})
        assert j.write("kept") == 1
        running = j.stall(30)
        time.sleep(0.3)  # let it start (it runs in another process)
        _kill(s)
        t0 = time.monotonic()
        with pytest.raises(mesh.ServerUnavailable):
            running.result(timeout=20)
        assert time.monotonic() - t0 < 15  # within the heartbeat timeout, never hangs
        assert _again(j.read) == (["kept"], True)
    finally:
        s.stop(signal.SIGKILL)


def test_redis_state_store(redis_url, monkeypatch):
    monkeypatch.setenv("MESH_STATE_STORE", redis_url)
    s = Start("--no-advertise", "--state-store", redis_url)
    try:
        j = Journal(to_dist={"host": s.host, "port": s.port, "checkpoint": True, "max_restarts": 1})
        assert j.write("r1") == 1
        _kill(s)
        assert _again(j.read) == (["r1"], True)
    finally:
        s.stop(signal.SIGKILL)
