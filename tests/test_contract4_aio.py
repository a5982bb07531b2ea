"""Acceptance tests of API.md, fourth pass: asyncio and futures corners a user hits (timeouts of 0, a
deadline's scope, ``asyncio.wait_for``, a dead producer awaited, bad arguments to wait/as_completed)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest

import mesh
from conftest import wait_until


class Box(metaclass=mesh.RpcMeta):
    def __init__(self, start=0):
        self.n = start

    def add(self, k=1):
        self.n += k
        return self.n

    def pid(self):
        return os.getpid()

    def left(self):
        return mesh.time_left()

    async def aleft(self):
        await asyncio.sleep(0)
        return mesh.time_left()

    def hold(self, seconds, value=None):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            mesh.check_cancelled()
            time.sleep(0.01)
        return value

    async def nap(self, seconds, value=None):
        await asyncio.sleep(seconds)
        return value

    def fail(self, kind):
        raise {"key": KeyError("k"), "zero": ZeroDivisionError("z"), "type": TypeError("t"),
               "perm": PermissionError(13, "denied"), "lookup": LookupError("l")}[kind]

    async def afail(self, kind):
        await asyncio.sleep(0)
        self.fail(kind)

    @mesh.stream_func
    def count(self, n):
        yield from range(n)


def on(srv):
    return {"host": srv.host, "port": srv.port}


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_result_timeout_zero_returns_a_finished_value_and_raises_at_once_for_a_pending_one(server):
    b = Box(to_dist=on(server))
    f = b.add.remote(5)
    wait_until(f.done, timeout=10)
    assert f.result(timeout=0) == 5  # finished: timeout 0 still gives the value
    slow = b.hold.remote(1.0, "late")
    for timeout in (0, -1):
        t = time.monotonic()
        with pytest.raises(mesh.CallTimeout) as err:
            slow.result(timeout=timeout)
        assert isinstance(err.value, TimeoutError)
        assert time.monotonic() - t < 0.5
    assert slow.result(timeout=10) == "late"  # nothing lost


def test_remote_gives_an_async_result_for_sync_and_coroutine_methods_and_a_stream_for_streams(server):
    b = Box(to_dist=on(server))
    f, g, s = b.add.remote(1), b.nap.remote(0, "n"), b.count.remote(3)
    assert isinstance(f, mesh.AsyncResult) and isinstance(g, mesh.AsyncResult)
    assert isinstance(s, mesh.Stream)

    async def main():
        return [await f, await f, await g, await s, await s]

    assert run(main()) == [1, 1, "n", [0, 1, 2], [0, 1, 2]]  # awaiting twice gives the same value
    assert f.result() == 1 and g.result() == "n" and s.result() == [0, 1, 2]


def test_asyncio_wait_for_times_out_in_time_cancels_the_call_and_shield_keeps_it(server):
    b = Box(to_dist=on(server))

    async def main(shield):
        f = b.nap.remote(1.0, "v")
        t = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(f) if shield else f, 0.1)
        took = time.monotonic() - t
        if shield:  # read in the same loop (asyncio.run's end cancels the shield's inner task)
            return await f, took
        return f, took

    f, took = run(main(False))
    assert took < 0.8
    with pytest.raises(mesh.Cancelled):  # as asyncio cancels what a timed-out wait_for awaited
        f.result(timeout=10)
    value, took = run(main(True))
    assert took < 0.8
    assert value == "v"  # shielded: the call goes on


def test_a_deadline_is_scoped_to_its_thread_and_its_asyncio_task(server):
    b = Box(to_dist=on(server))
    seen = []
    with mesh.deadline(30):
        t = threading.Thread(target=lambda: seen.append(b.left()))
        t.start()
        t.join(20)
        inside = b.left()
    assert seen == [None]  # another thread's calls carry no deadline
    assert 0 < inside <= 30
    assert b.left() is None  # after the block: none

    async def with_deadline(ready):
        async with mesh.deadline(30):
            ready.set()
            await asyncio.sleep(0.05)
            return await b.aleft.remote()

    async def without(ready):
        await ready.wait()
        return await b.aleft.remote()

    async def main():
        ready = asyncio.Event()
        return await asyncio.gather(with_deadline(ready), without(ready))

    mine, other = run(main())
    assert 0 < mine <= 30 and other is None


def test_a_deadline_covers_every_call_of_a_gather(server):
    boxes = [Box(to_dist=on(server)) for _ in range(3)]

    async def main():
        async with mesh.deadline(0.5):
            t = time.monotonic()
            outcome = await asyncio.gather(*(x.nap.remote(5, i) for i, x in enumerate(boxes)),
                                           return_exceptions=True)
            return outcome, time.monotonic() - t

    outcome, took = run(main())
    assert all(isinstance(o, mesh.DeadlineExceeded) for o in outcome), outcome
    assert took < 3
    assert [x.add(1) for x in boxes] == [1, 1, 1]  # the objects serve again


def test_wait_and_as_completed_with_timeout_zero_answer_at_once(server):
    b1, b2 = Box(to_dist=on(server)), Box(to_dist=on(server))
    fast = b1.add.remote(1)
    wait_until(fast.done, timeout=10)
    slow = b2.hold.remote(1.0, "s")
    t = time.monotonic()
    done, pending = mesh.wait([slow, fast], num_returns=2, timeout=0)
    assert time.monotonic() - t < 0.5
    assert done == [fast] and pending == [slow]
    with pytest.raises(TimeoutError):
        list(mesh.as_completed([slow], timeout=0))
    assert list(mesh.as_completed([fast], timeout=0)) == [fast]
    assert slow.result(timeout=10) == "s"


@pytest.mark.parametrize("bad", [[1, 2], ["x"], [None]])
def test_wait_and_as_completed_refuse_what_is_not_a_future(server, bad):
    with pytest.raises(TypeError):
        mesh.wait(bad)
    with pytest.raises(TypeError):
        list(mesh.as_completed(bad))


def test_wait_num_returns_out_of_range_is_a_value_error_like_ray(server):
    b = Box(to_dist=on(server))
    futs = [b.add.remote(1), b.add.remote(1)]
    for n in (-1, 3):
        with pytest.raises(ValueError):
            mesh.wait(futs, num_returns=n)
    done, pending = mesh.wait(futs, num_returns=2, timeout=10)
    assert len(done) == 2 and pending == []


@pytest.mark.parametrize("kind, cls", [("key", KeyError), ("zero", ZeroDivisionError), ("type", TypeError),
                                       ("perm", PermissionError), ("lookup", LookupError)])
def test_builtin_remote_exceptions_are_caught_by_their_class_sync_async_and_awaited(server, kind, cls):
    b = Box(to_dist=on(server))
    with pytest.raises(cls) as err:
        b.fail(kind)
    assert isinstance(err.value, mesh.RemoteError) and isinstance(err.value, mesh.MeshError)
    assert cls.__name__ in str(err.value.remote_type)
    with pytest.raises(cls):
        b.fail.remote(kind).result(timeout=10)

    async def main():
        await b.afail.remote(kind)

    with pytest.raises(cls):
        run(main())
    assert b.add(1) == 1  # the object serves again


def test_cancel_twice_is_harmless_and_every_read_raises_cancelled(server):
    b = Box(to_dist=on(server))
    f = b.hold.remote(10)
    assert f.cancel() is True
    again = f.cancel()
    assert isinstance(again, bool)
    assert f.done()
    with pytest.raises(mesh.Cancelled):
        f.result(timeout=10)

    async def main():
        await f

    with pytest.raises(mesh.Cancelled):
        run(main())
    assert b.add(2) == 2


def test_awaiting_a_future_whose_server_died_raises_server_unavailable_and_the_loop_runs(spawn_server):
    srv = spawn_server(port=0)
    b, other = Box(to_dist=on(srv)), Box(to_dist=on(srv))
    f = b.nap.remote(30, "never")
    pid = other.pid()

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        t = asyncio.ensure_future(ticker())
        await asyncio.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        try:
            with pytest.raises(mesh.ServerUnavailable):
                await f
        finally:
            t.cancel()
        return ticks

    start = time.monotonic()
    ticks = run(main(), timeout=40)
    assert time.monotonic() - start < 30 and ticks >= 3


def test_many_awaits_in_one_loop_keep_each_objects_order(server):
    boxes = [Box(i * 1000, to_dist=on(server)) for i in range(10)]

    async def main():
        futs = [x.add.remote(1) for _ in range(20) for x in boxes]
        return await asyncio.gather(*futs)

    values = run(main(), timeout=60)
    for i in range(10):
        assert values[i::10] == [i * 1000 + k for k in range(1, 21)]
