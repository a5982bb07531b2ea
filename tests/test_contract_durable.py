"""Acceptance tests of API.md: durable agents (checkpoint=True, max_restarts=N, state_store)."""

from __future__ import annotations

import signal

import pytest

import mesh
from test_contract_cli import Start


class Notebook(mesh.AgentBase):
    def __init__(self, name, start=0):
        super().__init__(name)
        self.count = start

    def reply(self, x):
        self.observe(x)
        self.count += 1
        return mesh.Msg(self.name, f"{len(self.memory)} notes")


class Tally(metaclass=mesh.RpcMeta):
    def __init__(self, start=0):
        self.total = start

    def add(self, n):
        self.total += n
        return self.total


@pytest.fixture
def store(tmp_path, monkeypatch):
    path = str(tmp_path / "states")
    monkeypatch.setenv("MESH_STATE_STORE", path)  # the child server's store: the same directory
    return path


def _kill(s):
    s.proc.send_signal(signal.SIGKILL)
    s.stop(signal.SIGKILL)


def test_distconf_accepts_durable_options():
    conf = mesh.DistConf(checkpoint=True, max_restarts=2)
    assert conf["checkpoint"] is True and conf["max_restarts"] == 2


def test_agent_server_accepts_state_store(tmp_path):
    srv = mesh.AgentServer(port=0, advertise=False, state_store=str(tmp_path / "s")).launch(in_subprocess=False)
    try:
        t = Tally(1, to_dist={"host": srv.host, "port": srv.port, "checkpoint": True})
        assert t.add(2) == 3
    finally:
        srv.shutdown()


def test_checkpointed_agent_restarts_with_its_memory(store):
    s = Start("--no-advertise", "--state-store", store)
    try:
        a = Notebook("nb", to_dist=mesh.DistConf(host=s.host, port=s.port, checkpoint=True, max_restarts=1))
        assert a(mesh.Msg("u", "one")).content == "1 notes"
        assert a(mesh.Msg("u", "two")).content == "2 notes"
        _kill(s)
        try:
            out = a(mesh.Msg("u", "three")).content
        except mesh.ServerUnavailable:  # at most once
            out = a(mesh.Msg("u", "three")).content
        assert out == "3 notes"
        assert a.count == 3
        assert [m.content for m in a.memory] == ["one", "two", "three"]
    finally:
        s.stop(signal.SIGKILL)


def test_plain_object_checkpoint_of_public_attributes_dict_form(store):
    s = Start("--no-advertise", "--state-store", store)
    try:
        t = Tally(10, to_dist={"host": s.host, "port": s.port, "checkpoint": True, "max_restarts": 2})
        assert t.add(5) == 15
        _kill(s)
        try:
            v = t.add(1)
        except mesh.ServerUnavailable:
            v = t.add(1)
        assert v == 16
    finally:
        s.stop(signal.SIGKILL)


def test_max_restarts_without_checkpoint_restarts_from_constructor(store):
    s = Start("--no-advertise", "--state-store", store)
    try:
        t = Tally(10, to_dist={"host": s.host, "port": s.port, "max_restarts": 1})
        assert t.add(5) == 15
        _kill(s)
        try:
            v = t.add(1)
        except mesh.ServerUnavailable:
            v = t.add(1)
        assert v == 11  # state lost, constructor arguments kept
    finally:
        s.stop(signal.SIGKILL)


def test_checkpoint_without_max_restarts_is_not_moved(store):
    s = Start("--no-advertise", "--state-store", store)
    try:
        t = Tally(1, to_dist={"host": s.host, "port": s.port, "checkpoint": True})
        assert t.add(1) == 2
        _kill(s)
        with pytest.raises(mesh.ServerUnavailable):
            t.add(1)
        with pytest.raises(mesh.ServerUnavailable):
            t.add(1)
    finally:
        s.stop(signal.SIGKILL)


class Holder(metaclass=mesh.RpcMeta):
    def __init__(self, other):
        self.other = other

    def poke(self, n):
        return self.other.add(n)


def test_proxies_held_by_other_agents_follow(store):
    s = Start("--no-advertise", "--state-store", store)
    srv2 = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=False)
    try:
        t = Tally(0, to_dist={"host": s.host, "port": s.port, "checkpoint": True, "max_restarts": 1})
        h = Holder(t, to_dist={"host": srv2.host, "port": srv2.port})
        assert h.poke(2) == 2
        _kill(s)
        try:
            v = h.poke(3)
        except mesh.ServerUnavailable:
            v = h.poke(3)
        assert v == 5
        assert t.add(0) == 5
    finally:
        srv2.shutdown()
        s.stop(signal.SIGKILL)
