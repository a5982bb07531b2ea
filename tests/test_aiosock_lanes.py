"""Calls issued on a running asyncio loop go on a socket that loop owns (``transport._lanes``).

What must hold: values and errors as before; one caller's order to one object across the loop's
socket, the I/O thread's and other threads; a future read with ``.result()`` on the loop's own
thread (the loop blocked), after the loop closed (same thread, another thread, another loop);
cancellation, deadlines, connect failures, a server that dies, and a secret.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest

import mesh
from mesh.client import _on_loop
from mesh.client._proxy import RpcObject
from transport import _lanes
from conftest import wait_until


class Recorder(metaclass=mesh.RpcMeta):
    def __init__(self) -> None:
        self.seen: list = []

    async def slow(self, x, pause: float = 0.02):
        await asyncio.sleep(pause)
        self.seen.append(x)
        return x

    def note(self, x):
        self.seen.append(x)
        return x

    @mesh.async_func
    def later(self, x):
        self.seen.append(x)
        return x

    def log(self) -> list:
        return list(self.seen)

    async def fail(self):
        raise ValueError("nope")

    async def nap(self, seconds: float):
        await asyncio.sleep(seconds)
        return "woke"


def _on(srv):
    return {"host": "127.0.0.1", "port": srv.port}


def _call_of(fut):
    return fut.__dict__["_mesh_call"]


def test_awaits_go_on_the_loops_own_socket_and_keep_values_errors_and_order(server):
    rec = Recorder(to_dist=_on(server))

    async def main():
        fut = rec.slow(1, 0)
        assert isinstance(_call_of(fut), _lanes.LaneFuture)
        assert await fut == 1
        assert await rec.note.remote(2) == 2
        with pytest.raises(ValueError, match="nope"):
            await rec.fail()
        values = await asyncio.gather(*(rec.later(i) for i in range(3, 503)))  # a burst: the I/O thread sends it
        assert values == list(range(3, 503))
        burst = [rec.later(i) for i in range(503, 543)]
        assert rec.note(543) == 543  # a blocking call behind a burst, from the loop's thread
        assert [await f for f in burst] == list(range(503, 543))
        assert await rec.later(544) == 544  # and the loop's own socket again after it
        return rec.log()

    assert asyncio.run(asyncio.wait_for(main(), 60)) == list(range(1, 545))
    assert not _on_loop.busy


def test_a_sync_call_on_the_loop_and_calls_from_other_threads_stay_behind_the_loops_calls(server):
    rec = Recorder(to_dist=_on(server))
    from_thread: list = []

    async def main():
        futs = [rec.slow(i, 0.05) for i in range(5)]  # in flight on the loop's socket
        t = threading.Thread(target=lambda: from_thread.append(rec.note(100)))
        t.start()
        await asyncio.to_thread(t.join, 30)  # its sync call was handed to this loop, behind the five
        assert rec.note(5) == 5  # a blocking call from the loop's thread: behind them, on the same socket
        assert [await f for f in futs] == [0, 1, 2, 3, 4]

    asyncio.run(asyncio.wait_for(main(), 60))
    log = rec.log()
    assert from_thread == [100]
    assert log == [0, 1, 2, 3, 4, 100, 5]  # the thread's call went behind the loop's five


def test_a_thread_calling_an_object_busy_on_a_loop_does_not_wait_for_those_calls(server):
    rec = Recorder(to_dist=_on(server))
    issued = threading.Event()
    got: list = []

    async def main():
        slow = rec.nap(1.0)

        def other():
            fut = rec.later(7)  # returns at once although the loop's call is out
            issued.set()
            got.append(fut.result(30))

        t = threading.Thread(target=other)
        t.start()
        await asyncio.sleep(0)
        assert await asyncio.to_thread(issued.wait, 0.5)  # not held behind the 1 s call
        assert await slow == "woke"
        await asyncio.to_thread(t.join, 30)

    asyncio.run(asyncio.wait_for(main(), 60))
    assert got == [7]


def test_result_on_the_loops_thread_drives_its_socket(server):
    rec = Recorder(to_dist=_on(server))

    async def main():
        fut = rec.slow(3, 0)
        return fut.result(timeout=20)  # blocks the loop: the socket is read right here

    assert asyncio.run(asyncio.wait_for(main(), 30)) == 3


def test_futures_read_after_their_loop_closed_from_this_thread_another_and_another_loop(server):
    rec = Recorder(to_dist=_on(server))

    async def make():
        return [rec.slow(i, 0.05) for i in range(3)]

    a, b, c = asyncio.run(make())  # the loop closed with all three out
    assert a.result(timeout=20) == 0  # this thread: reads them itself
    out: list = []
    t = threading.Thread(target=lambda: out.append(b.result(timeout=20)))
    t.start()
    t.join(30)
    assert out == [1]

    async def read():
        return await c

    assert asyncio.run(asyncio.wait_for(read(), 20)) == 2

    async def make_more():
        return [rec.slow(i, 0.2) for i in range(3, 5)]

    d, e = asyncio.run(make_more())
    out.clear()
    threads = [threading.Thread(target=lambda f=f: out.append(f.result(timeout=20))) for f in (d, e)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(out) == [3, 4]


def test_cancelling_the_awaiting_task_cancels_the_remote_call(server):
    rec = Recorder(to_dist=_on(server))

    async def main():
        fut = rec.nap(30)
        task = asyncio.ensure_future(_awaited(fut))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(mesh.Cancelled):
            await asyncio.to_thread(fut.result, 10)

    t0 = time.monotonic()
    asyncio.run(asyncio.wait_for(main(), 30))
    assert time.monotonic() - t0 < 10


async def _awaited(fut):
    return await fut


def test_a_deadline_ends_an_await_on_the_loops_socket(server):
    rec = Recorder(to_dist=_on(server))

    async def main():
        with mesh.deadline(0.3):
            fut = rec.nap(30)
        assert isinstance(_call_of(fut), _lanes.LaneFuture)
        with pytest.raises(mesh.DeadlineExceeded):
            await fut

    t0 = time.monotonic()
    asyncio.run(asyncio.wait_for(main(), 30))
    assert time.monotonic() - t0 < 10


def test_a_server_that_dies_fails_the_await_within_the_heartbeat_timeout(spawn_server):
    srv = spawn_server(port=0)
    rec = Recorder(to_dist=_on(srv))

    async def main():
        assert await rec.slow(0, 0) == 0
        fut = rec.nap(60)
        await asyncio.sleep(0.2)
        os.kill(srv.pid, signal.SIGKILL)
        with pytest.raises(mesh.ServerUnavailable):
            await fut

    t0 = time.monotonic()
    asyncio.run(asyncio.wait_for(main(), 40))
    assert time.monotonic() - t0 < 20


def test_nothing_listening_fails_the_await_with_server_unavailable():
    mesh.init(connect_timeout=1.0)
    rec = RpcObject("tcp://127.0.0.1:9", "nobody.1", "Recorder", {"slow": "async"})

    async def main():
        with pytest.raises(mesh.ServerUnavailable):
            await rec.slow(1)

    t0 = time.monotonic()
    asyncio.run(asyncio.wait_for(main(), 30))
    assert time.monotonic() - t0 < 10


def test_the_loops_socket_uses_the_secret(spawn_server, monkeypatch):
    monkeypatch.setenv("MESH_SECRET", "lane-secret")
    srv = spawn_server(port=0)
    mesh._core.settings.reset()
    rec = Recorder(to_dist=_on(srv))

    async def main():
        fut = rec.slow(9, 0)
        assert isinstance(_call_of(fut), _lanes.LaneFuture)
        assert _call_of(fut).lane.recipe.keys is not None
        return await fut

    assert asyncio.run(asyncio.wait_for(main(), 30)) == 9
    assert wait_until(lambda: not _on_loop.busy, timeout=5)
