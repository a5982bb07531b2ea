"""Acceptance tests of API.md, sixth pass: the ways to say where an object goes (docs/guide.md,
"Where objects go"): ``host="H:P"``, ``tcp://H:P``, a port alone, ``DistConf`` by position, the
AgentScope options that are accepted and ignored, wrong ``to_dist=`` values, a proxy's own
``to_dist()``; and the client-side deadline API (``mesh.time_left()`` outside any server)."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

import mesh
from conftest import wait_until


class Here(metaclass=mesh.RpcMeta):
    def __init__(self, v: int = 0) -> None:
        self.v = v

    def where(self):
        return os.getpid(), self.v


@pytest.fixture(scope="module")
def two():
    a = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=True)
    b = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=True)
    try:
        yield a, b
    finally:
        a.shutdown()
        b.shutdown()


def _pid(srv) -> int:
    return Here(to_dist={"host": srv.host, "port": srv.port}).where()[0]


def test_every_documented_address_form_reaches_the_same_server(two):
    a, _ = two
    pid = _pid(a)
    forms = [
        Here(1).to_dist(host=f"{a.host}:{a.port}"),
        Here(2).to_dist(host=a.address),
        Here(3).to_dist(port=a.port),  # a port alone: this machine
        Here(4, to_dist={"host": f"{a.host}:{a.port}"}),
        Here(5, to_dist=mesh.DistConf(a.host, a.port)),  # DistConf(host=None, port=None, **options), by position
        Here(6, to_dist=mesh.DistConf(port=a.port)),
    ]
    assert [f.where() for f in forms] == [(pid, i) for i in range(1, 7)]


@pytest.mark.parametrize(
    "option, value",
    [("max_pool_size", 100), ("max_timeout_seconds", 60), ("local_mode", False), ("lazy_launch", False),
     ("max_expire_time", 30)],
)  # fmt: skip
def test_agentscope_to_dist_options_are_accepted_and_ignored(two, option, value):
    a, _ = two
    assert Here(7).to_dist(host=a.host, port=a.port, **{option: value}).where()[1] == 7
    assert Here(8, to_dist={"host": a.host, "port": a.port, option: value}).where()[1] == 8


@pytest.mark.parametrize("bad", ["somewhere", 1, 2.5, ["h", 1]])
def test_a_to_dist_value_that_is_not_true_a_distconf_or_a_dict_is_a_type_error(bad):
    with pytest.raises(TypeError) as info:
        Here(to_dist=bad)
    assert "to_dist" in str(info.value)


def test_a_proxys_own_to_dist_is_itself_and_it_never_moves(two):
    a, b = two
    proxy = Here(9, to_dist={"host": a.host, "port": a.port})
    assert proxy.to_dist() is proxy
    with pytest.raises(ValueError) as info:
        proxy.to_dist(host=b.host, port=b.port)
    assert b.address in str(info.value)
    assert proxy.where() == (_pid(a), 9)


def test_time_left_in_a_client_is_the_innermost_deadline_block():
    assert mesh.time_left() is None
    with mesh.deadline(30):
        outer = mesh.time_left()
        with mesh.deadline(2):
            inner = mesh.time_left()
        with mesh.deadline(60):  # a later deadline does not extend the outer one
            later = mesh.time_left()
        assert 29 < outer <= 30 and 1 < inner <= 2 and later <= 30
    assert mesh.time_left() is None

    async def main():
        async with mesh.deadline(5):
            return mesh.time_left()

    assert 4 < asyncio.run(main()) <= 5


@pytest.mark.parametrize("bad", [-1, "soon", None])
def test_a_deadline_that_is_not_a_number_of_seconds_is_refused(bad):
    with pytest.raises((TypeError, ValueError)) as info:
        with mesh.deadline(bad):
            pass
    assert "deadline" in str(info.value)


GATE = threading.Event()


class Held(metaclass=mesh.RpcMeta):
    def hold(self):
        return GATE.wait(30)


def test_servers_report_the_load_of_calls_running_now(monkeypatch):
    # API.md: mesh.servers() gives each server's .name, .address, .capacity, .load
    monkeypatch.setenv("MESH_DISCOVERY", "1")
    srv = mesh.AgentServer(port=0, capacity=4, name="c6-load").launch(in_subprocess=False)
    GATE.clear()
    try:
        futs = [Held(to_dist={"host": srv.host, "port": srv.port}).hold.remote() for _ in range(3)]

        def mine(load):
            return [s for s in mesh.servers(timeout=1.0) if s.address == srv.address and s.load == load]

        info = wait_until(lambda: mine(3), timeout=20)[0]
        assert (info.name, info.capacity) == ("c6-load", 4)
        GATE.set()
        assert all(f.result(timeout=20) for f in futs)
        wait_until(lambda: mine(0), timeout=20)
    finally:
        GATE.set()
        srv.shutdown()
