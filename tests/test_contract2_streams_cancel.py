"""Acceptance tests (second pass) of API.md "Streams" and "Cancellation and deadlines"."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time

import pytest

import mesh
from conftest import wait_until

GO = threading.Event()
STARTED = threading.Event()
CLOSED = threading.Event()
FINALLY: list = []


class Src(metaclass=mesh.RpcMeta):
    @mesh.stream_func
    def count(self, n):
        for i in range(n):
            yield i

    @mesh.stream_func
    async def acount(self, n):
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    @mesh.stream_func
    def held(self):
        yield "a"
        STARTED.set()
        assert GO.wait(20)
        yield "b"

    @mesh.stream_func
    def endless(self):
        try:
            i = 0
            while True:
                yield i
                i += 1
                time.sleep(0.01)
        finally:
            CLOSED.set()

    @mesh.stream_func
    async def aendless(self):
        try:
            i = 0
            while True:
                yield i
                i += 1
                await asyncio.sleep(0.01)
        finally:
            CLOSED.set()

    @mesh.stream_func
    def broken(self):
        yield "x"
        raise KeyError("gen failed")

    @mesh.async_func
    def sleepy(self, seconds):
        time.sleep(seconds)
        return "slept"

    async def asleepy(self, seconds):
        try:
            await asyncio.sleep(seconds)
        finally:
            FINALLY.append("asleepy")
        return "slept"

    @mesh.async_func
    def spin(self):
        STARTED.set()
        end = time.monotonic() + 20
        while time.monotonic() < end:
            mesh.check_cancelled()
            time.sleep(0.01)
        return "spun"

    @mesh.async_func
    def left(self):
        return mesh.time_left()

    async def aleft(self):
        return mesh.time_left()

    async def relay(self, other):
        # a coroutine that makes a call: cancelling it cancels that call too
        return await other.spin()


class Sink(metaclass=mesh.RpcMeta):
    def collect(self, s):
        return [item for item in s]

    async def acollect(self, s):
        return [item async for item in s]


def on(srv):
    return {"host": srv.host, "port": srv.port}


@pytest.fixture(autouse=True)
def _reset():
    GO.clear()
    STARTED.clear()
    CLOSED.clear()
    FINALLY.clear()
    yield
    GO.set()


# ---------------------------------------------------------------- streams

def test_async_generator_stream_local_and_remote(server):
    local = Src()
    assert inspect.isasyncgen(local.acount(2))
    s = Src(to_dist=on(server)).acount(4)
    assert isinstance(s, mesh.Stream)
    assert list(s) == [0, 1, 2, 3]

    async def main():
        return [i async for i in Src(to_dist=on(server)).acount(3)]

    assert asyncio.run(asyncio.wait_for(main(), 10)) == [0, 1, 2]


def test_stream_done_and_result_after_partial_read(server):
    s = Src(to_dist=on(server)).held()
    it = iter(s)
    assert next(it) == "a"
    assert not s.done()
    GO.set()
    assert s.result(timeout=10) == ["a", "b"]
    assert s.done()
    assert list(it) == ["b"]


def test_stream_every_reader_gets_every_item_from_the_start(server, spawn_server):
    other = spawn_server(port=0)
    s = Src(to_dist=on(server)).held()
    assert STARTED.wait(10)
    # a consumer on the same server and one on another, both while it is still produced
    f1 = Sink(to_dist=on(other)).acollect.remote(s)
    f2 = Sink(to_dist=on(server)).collect.remote(s)
    assert not f1.done() and not f2.done()
    GO.set()
    assert f1.result(timeout=15) == ["a", "b"]
    assert f2.result(timeout=15) == ["a", "b"]
    assert list(s) == ["a", "b"]


def test_stream_of_raising_generator_in_async_for_and_result(server):
    s = Src(to_dist=on(server)).broken()
    got = []
    with pytest.raises(mesh.RemoteError) as ei:
        for item in s:
            got.append(item)
    assert got == ["x"] and isinstance(ei.value, KeyError)
    with pytest.raises(mesh.RemoteError):
        s.result(timeout=10)

    async def main():
        items = []
        with pytest.raises(KeyError):
            async for item in Src(to_dist=on(server)).broken():
                items.append(item)
        with pytest.raises(mesh.RemoteError):
            await Src(to_dist=on(server)).broken()
        return items

    assert asyncio.run(asyncio.wait_for(main(), 10)) == ["x"]


def test_stream_cancel_of_async_generator_closes_it_and_reading_raises_cancelled(server):
    s = Src(to_dist=on(server)).aendless()
    it = iter(s)
    assert next(it) == 0
    assert s.cancel() is True
    assert CLOSED.wait(10)
    with pytest.raises(mesh.Cancelled):
        s.result(timeout=10)


# ---------------------------------------------------------------- cancellation

def test_outside_a_call_cancelled_is_false_and_time_left_is_none(server):
    assert mesh.cancelled() is False
    mesh.check_cancelled()  # no-op outside a cancelled call
    assert mesh.time_left() is None
    w = Src(to_dist=on(server))
    assert w.left().result(timeout=10) is None
    assert w.aleft().result(timeout=10) is None


def test_reading_a_cancelled_future_raises_cancelled_every_way(server):
    w = Src(to_dist=on(server))
    f = w.spin()
    assert STARTED.wait(10)
    assert f.cancel() is True
    with pytest.raises(mesh.Cancelled):
        f.result(timeout=10)
    with pytest.raises(mesh.Cancelled):
        asyncio.run(asyncio.wait_for(_await(f), 10))
    assert f.done()
    assert isinstance(mesh.Cancelled("x"), mesh.MeshError)


async def _await(f):
    return await f


def test_cancel_a_running_coroutine_runs_its_finally(server):
    w = Src(to_dist=on(server))
    f = w.asleepy(30)
    wait_until(lambda: not f.done(), timeout=2)
    time.sleep(0.2)  # let it reach its await (no event to wait on from the outside)
    assert f.cancel() is True
    wait_until(lambda: FINALLY == ["asleepy"], timeout=10)
    with pytest.raises(mesh.Cancelled):
        f.result(timeout=10)
    assert w.left().result(timeout=10) is None  # the object keeps serving


def test_cancel_is_transitive_through_a_coroutine(server, spawn_server):
    other = spawn_server(port=0)
    callee = Src(to_dist=on(other))
    caller = Src(to_dist=on(server))
    f = caller.relay(callee)
    # the callee runs in another process: wait until it is busy by probing it with a deadline
    time.sleep(0.5)
    assert f.cancel() is True
    # once the transitive cancel lands, the callee's object is free again
    assert callee.left().result(timeout=10) is None


def test_placeholder_field_read_after_cancel_raises_cancelled(server):
    class Slow(mesh.AgentBase):
        def reply(self, x=None):
            time.sleep(0.05)
            while True:
                mesh.check_cancelled()
                time.sleep(0.01)

    a = Slow("slow", to_dist=on(server))
    p = a(mesh.Msg("u", "q"))
    time.sleep(0.2)
    assert p.cancel() is True
    with pytest.raises(mesh.Cancelled):
        p.content  # noqa: B018


# ---------------------------------------------------------------- deadlines

def test_deadline_exceeded_is_call_timeout_and_timeout_error():
    assert issubclass(mesh.DeadlineExceeded, mesh.CallTimeout)
    assert issubclass(mesh.DeadlineExceeded, TimeoutError)
    assert issubclass(mesh.DeadlineExceeded, mesh.MeshError)


def test_sync_call_and_stream_inside_deadline_raise_at_the_deadline(server):
    w = Src(to_dist=on(server))
    t0 = time.monotonic()
    with pytest.raises(mesh.DeadlineExceeded):
        with mesh.deadline(0.5):
            w.sleepy(5).result()
    assert time.monotonic() - t0 < 3.0
    w2 = Src(to_dist=on(server))
    t0 = time.monotonic()
    items = []
    with pytest.raises(mesh.DeadlineExceeded):
        with mesh.deadline(0.5):
            for i in w2.endless():
                items.append(i)
    assert time.monotonic() - t0 < 3.0 and items
    assert CLOSED.wait(10)  # the generator of the stream is closed at the deadline


def test_future_read_after_leaving_the_deadline_block(server):
    w = Src(to_dist=on(server))
    with mesh.deadline(0.4):
        f = w.asleepy(5)
        g = w.aleft()
    t0 = time.monotonic()
    with pytest.raises(mesh.DeadlineExceeded):
        f.result()
    assert time.monotonic() - t0 < 3.0
    assert FINALLY == ["asleepy"] or wait_until(lambda: FINALLY == ["asleepy"], timeout=5)
    with pytest.raises(mesh.DeadlineExceeded):
        g.result(timeout=5)  # queued behind f on the same actor: never started in time


def test_time_left_counts_down_inside_remote_coroutine(server):
    w = Src(to_dist=on(server))

    async def main():
        async with mesh.deadline(5):
            return await w.aleft()

    left = asyncio.run(asyncio.wait_for(main(), 10))
    assert isinstance(left, float) and 0 < left <= 5


def test_stream_cancel_answer_agrees_with_what_readers_get(server):
    # cancel() right after the call, on an idle actor: the stop may come before or after the
    # generator ran; True must mean "stopped" (readers get Cancelled), False "it finished" (all items)
    src = Src(to_dist=on(server))
    for _ in range(20):
        s = src.count(2)
        if s.cancel():
            with pytest.raises(mesh.Cancelled):
                s.result(timeout=10)
        else:
            assert s.result(timeout=10) == [0, 1]
