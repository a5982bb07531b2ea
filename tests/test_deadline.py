"""Deadlines: mesh.deadline() travels with every call as time left; readers get DeadlineExceeded then."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

import mesh
from cancel_agents import Worker
from conftest import wait_until
from tests.conftest import freeze


def on(srv) -> dict:
    return {"host": srv.host, "port": srv.port}


def test_deadline_exceeded_is_a_call_timeout_and_a_mesh_error():
    assert issubclass(mesh.DeadlineExceeded, mesh.CallTimeout)
    assert issubclass(mesh.DeadlineExceeded, mesh.MeshError)
    assert issubclass(mesh.DeadlineExceeded, TimeoutError)
    assert not issubclass(mesh.DeadlineExceeded, mesh.Cancelled)


def test_a_reader_gets_deadline_exceeded_at_the_deadline_and_the_call_is_cancelled(server):
    w = Worker(to_dist=on(server))
    t0 = time.monotonic()
    with mesh.deadline(0.5):
        fut = w.nap(30)
    with pytest.raises(mesh.DeadlineExceeded):
        fut.result()
    took = time.monotonic() - t0
    assert 0.45 <= took < 5
    wait_until(lambda: "nap-cancelled" in w.log, timeout=10)
    with pytest.raises(mesh.DeadlineExceeded):  # kept: every read says the same
        fut.result()


def test_a_sync_call_under_a_deadline_raises_deadline_exceeded(server):
    w = Worker(to_dist=on(server))
    t0 = time.monotonic()
    with pytest.raises(mesh.DeadlineExceeded), mesh.deadline(0.3):
        w.wait_sync(30)
    assert time.monotonic() - t0 < 5
    wait_until(lambda: "inner-saw-cancel" in w.log, timeout=10)


def test_async_with_and_await(server):
    w = Worker(to_dist=on(server))

    async def main():
        async with mesh.deadline(0.3):
            return await w.nap(30)

    t0 = time.monotonic()
    with pytest.raises(mesh.DeadlineExceeded):
        asyncio.run(main())
    assert 0.25 <= time.monotonic() - t0 < 5


def test_a_call_not_started_by_its_deadline_never_starts(server):
    w = Worker(to_dist=on(server))
    blocker = w.spin(30)
    wait_until(lambda: "spin-start" in w.log, timeout=10)
    with mesh.deadline(0.3):
        late = w.mark("late")
    with pytest.raises(mesh.DeadlineExceeded):
        late.result(timeout=10)
    blocker.cancel()
    assert w.mark("after").result(timeout=10) == "after"
    assert "late" not in w.log


def test_a_deadline_already_passed_sends_nothing(server):
    w = Worker(to_dist=on(server))
    with mesh.deadline(0):
        never = w.mark("never")  # an async call still gives its future, which fails with the deadline
        assert never.done()
        for _ in range(2):  # every read raises it
            with pytest.raises(mesh.DeadlineExceeded, match="never starts"):
                never.result(timeout=10)
        with pytest.raises(mesh.DeadlineExceeded):  # a sync call raises it at once
            w.time_left()
        done, pending = mesh.wait([w.mark("never")], timeout=5)  # done (failed) at once
        assert len(done) == 1 and pending == []

        async def awaited():
            with pytest.raises(mesh.DeadlineExceeded):
                await w.mark("never")

        asyncio.run(asyncio.wait_for(awaited(), 10))
    assert w.mark("ok").result(timeout=10) == "ok"
    assert w.log == ["ok"]


def test_time_left_inside_a_method_and_across_a_second_hop(server, spawn_server):
    w, other = Worker(to_dist=on(server)), Worker(to_dist=on(spawn_server()))
    assert w.time_left() is None
    with mesh.deadline(20) as d:
        assert 0 < d.time_left() <= 20
        assert 0 < mesh.time_left() <= 20  # in the client too
        here, there = w.time_left_at(other)
    assert 0 < there <= here <= 20
    assert w.time_left() is None  # the block ended
    assert 0 < w.time_left_with(5) <= 5  # a deadline inside a method with none


def test_nested_deadlines_take_the_earlier(server):
    w = Worker(to_dist=on(server))
    with mesh.deadline(1):
        with mesh.deadline(30):
            assert w.time_left() <= 1
    with mesh.deadline(30):
        with mesh.deadline(1):
            assert w.time_left() <= 1
        assert 1 < w.time_left() <= 30
    with mesh.deadline(20):
        assert w.time_left_with(30) <= 20  # inside a method too: the call's deadline is earlier


def test_a_method_sees_its_deadline_pass_as_cancelled(server):
    w = Worker(to_dist=on(server))
    with mesh.deadline(0.3):
        fut = w.spin(30)
    with pytest.raises(mesh.DeadlineExceeded):
        fut.result()
    wait_until(lambda: "spin-saw-cancel" in w.log, timeout=10)


def test_the_reader_gets_deadline_exceeded_even_when_the_server_is_unreachable(spawn_server):
    srv = spawn_server()
    w = Worker(to_dist=on(srv))
    freeze(srv.pid)
    try:
        t0 = time.monotonic()
        with mesh.deadline(0.5):
            fut = w.nap(30)
        with pytest.raises(mesh.DeadlineExceeded):
            fut.result()
        assert time.monotonic() - t0 < 5
    finally:
        os.kill(srv.pid, signal.SIGCONT)


class SlowStart(metaclass=mesh.RpcMeta):
    def __init__(self, seconds: float) -> None:
        time.sleep(seconds)  # a slow constructor: the creation stays unanswered meanwhile

    def ping(self) -> str:
        return "pong"

    @mesh.async_func
    def aping(self) -> str:
        return "pong"


def test_calls_to_an_object_whose_creation_is_unanswered_end_at_their_deadline(server):
    slow = SlowStart(3, to_dist=on(server))  # returns before the constructor ends (pipelined)
    t0 = time.monotonic()
    with mesh.deadline(0.3):
        with pytest.raises(mesh.DeadlineExceeded):
            slow.ping()
        fut = slow.aping()  # an async call: a future that fails, not an exception at the call
    with pytest.raises(mesh.DeadlineExceeded):
        fut.result()
    assert time.monotonic() - t0 < 2.5, "the calls waited for the constructor, not their deadline"
    assert slow.ping() == "pong"  # no deadline: it waits for the creation, then the object answers


def test_bad_deadlines_are_refused():
    for bad in (-1, float("nan")):
        with pytest.raises(ValueError, match="seconds >= 0"):
            mesh.deadline(bad)
    for bad in ("1", None, True):
        with pytest.raises(TypeError, match="seconds >= 0") as info:
            mesh.deadline(bad)
        assert isinstance(info.value, ValueError)  # what it raised before
