"""Acceptance tests of API.md: cancellation and deadlines."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import mesh
from conftest import wait_until

GO = threading.Event()
EVENTS: dict[str, threading.Event] = {}
RAN: list = []
LEFT: list = []


def ev(name):
    return EVENTS.setdefault(name, threading.Event())


class Worker(metaclass=mesh.RpcMeta):
    @mesh.async_func
    def block(self):
        ev("block_started").set()
        assert GO.wait(20)
        return "blocked"

    @mesh.async_func
    def mark(self, tag):
        RAN.append(tag)
        return tag

    @mesh.async_func
    def coop(self):
        ev("coop_started").set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if mesh.cancelled():
                ev("coop_saw").set()
                mesh.check_cancelled()
            time.sleep(0.01)
        return "not cancelled"

    async def coro(self):
        ev("coro_started").set()
        try:
            await asyncio.sleep(20)
        except asyncio.CancelledError:
            ev("coro_cancelled").set()
            raise
        return "finished"

    @mesh.async_func
    def chain(self, other):
        f = other.coop()
        return f.result()

    @mesh.async_func
    def time_left(self):
        return mesh.time_left()

    @mesh.async_func
    def nested_time_left(self, other):
        return mesh.time_left(), other.time_left().result()

    @mesh.async_func
    def quick(self):
        return 1


def on(srv):
    return {"host": srv.host, "port": srv.port}


@pytest.fixture(autouse=True)
def _reset():
    GO.clear()
    EVENTS.clear()
    RAN.clear()
    yield
    GO.set()


def test_cancel_queued_call_never_runs(server):
    w = Worker(to_dist=on(server))
    first = w.block()
    assert ev("block_started").wait(10)
    queued = w.mark("queued")
    assert queued.cancel() is True
    with pytest.raises(mesh.Cancelled):
        queued.result(timeout=10)
    GO.set()
    assert first.result(timeout=10) == "blocked"
    assert w.mark("after").result(timeout=10) == "after"
    assert RAN == ["after"]


def test_cancel_running_sync_method_is_cooperative(server):
    w = Worker(to_dist=on(server))
    f = w.coop()
    assert ev("coop_started").wait(10)
    assert f.cancel() is True
    assert ev("coop_saw").wait(10)
    with pytest.raises(mesh.Cancelled):
        f.result(timeout=10)


def test_cancel_running_coroutine(server):
    w = Worker(to_dist=on(server))
    f = w.coro()
    assert ev("coro_started").wait(10)
    assert f.cancel() is True
    assert ev("coro_cancelled").wait(10)
    with pytest.raises(mesh.Cancelled):
        f.result(timeout=10)


def test_cancel_finished_returns_false(server):
    w = Worker(to_dist=on(server))
    f = w.quick()
    assert f.result(timeout=10) == 1
    assert f.cancel() is False
    assert f.result() == 1


def test_cancel_is_transitive_across_servers(server, spawn_server):
    other = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=False)
    try:
        a = Worker(to_dist=on(server))
        b = Worker(to_dist=on(other))
        f = a.chain(b)
        assert ev("coop_started").wait(10)
        assert f.cancel() is True
        assert ev("coop_saw").wait(10)  # the call made by the cancelled call was cancelled too
        with pytest.raises(mesh.Cancelled):
            f.result(timeout=10)
    finally:
        other.shutdown()


class Stuck(mesh.AgentBase):
    def reply(self, x):
        ev("reply_started").set()
        while not mesh.cancelled():
            time.sleep(0.01)
        mesh.check_cancelled()


def test_placeholder_cancel(server):
    a = Stuck("s", to_dist=on(server))
    p = a(mesh.Msg("u", "x"))
    assert ev("reply_started").wait(10)
    assert p.cancel() is True
    with pytest.raises(mesh.Cancelled):
        p.result(timeout=10)


def test_deadline_exceeded_at_the_deadline(server):
    w = Worker(to_dist=on(server))
    t0 = time.monotonic()
    with mesh.deadline(0.5):
        f = w.coop()
    with pytest.raises(mesh.DeadlineExceeded) as info:
        f.result()
    elapsed = time.monotonic() - t0
    assert isinstance(info.value, mesh.CallTimeout) and isinstance(info.value, TimeoutError)
    assert elapsed < 4
    assert ev("coop_saw").wait(10)  # the running call was cancelled


def test_deadline_call_not_started_never_starts(server):
    w = Worker(to_dist=on(server))
    first = w.block()
    assert ev("block_started").wait(10)
    with mesh.deadline(0.3):
        late = w.mark("late")
    with pytest.raises(mesh.DeadlineExceeded):
        late.result()
    # the server counts the time left from the call's arrival: allow it the one-way latency
    time.sleep(0.5)
    GO.set()
    assert first.result(timeout=10) == "blocked"
    assert w.mark("x").result(timeout=10) == "x"
    assert RAN == ["x"]


def test_time_left_inside_remote_method(server, spawn_server):
    other = spawn_server(port=0)
    w = Worker(to_dist=on(server))
    w2 = Worker(to_dist=on(other))
    assert w.time_left().result(timeout=10) is None
    with mesh.deadline(30):
        left = w.time_left().result(timeout=10)
        outer, inner = w.nested_time_left(w2).result(timeout=10)
    assert 0 < left <= 30
    assert 0 < inner <= outer <= 30  # the deadline travelled to the other server
    assert mesh.time_left() is None


def test_async_with_deadline(server):
    w = Worker(to_dist=on(server))

    async def main():
        async with mesh.deadline(0.3):
            f = w.coro()
        with pytest.raises(mesh.DeadlineExceeded):
            await f

    asyncio.run(main())
    assert ev("coro_cancelled").wait(10)
    wait_until(lambda: w.quick().result(timeout=10) == 1)
