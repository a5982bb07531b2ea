"""An await waits for its reply in place while its loop has nothing else to do (helper aiolat4).

``transport._lane_drive.wait_here``: the awaiting coroutine polls its lane's socket and the loop's
own epoll descriptor instead of sleeping on a waiter. What it must keep: the values; the loop is
never kept from anything it would have done (a thread's ``call_soon_threadsafe``, a timer, another
reader); a cancel, also one requested before the await, cancels the remote call. ``HERE_MAX`` is
raised to 30 s here, so only those wake-ups (not the cap) can end an in-place wait.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

import mesh.client._aio_fast as _aio_fast
import transport._lane_drive as _drive
from conftest import wait_until
from mesh.client import _on_loop
from test_aio3_lane import Echo


class Slow(Echo):  # (echo, wait_cancel, log)
    def nap(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds


@pytest.fixture
def long_waits(monkeypatch):
    monkeypatch.setattr(_drive, "HERE_MAX", 30.0)
    monkeypatch.setattr(_drive, "here", True)
    seen: list = []
    real = _aio_fast._wait_here

    def spy(lane, fut, loop):
        done = real(lane, fut, loop)
        seen.append(done)
        return done

    monkeypatch.setattr(_aio_fast, "_wait_here", spy)
    return seen


def _on(srv):
    return {"host": "127.0.0.1", "port": srv.port}


def test_an_await_chain_waits_in_place_and_reads_every_value(server, long_waits):
    obj = Slow(to_dist=_on(server))

    async def main():
        return [await obj.echo.remote(i) for i in range(200)] + [await obj.echo.remote({"k": [1, 2]})]

    assert asyncio.run(asyncio.wait_for(main(), 30)) == [*range(200), {"k": [1, 2]}]
    assert long_waits.count(True) > 100  # the chain's replies were read in place
    wait_until(lambda: not _on_loop.busy, 5)


def test_a_threads_call_soon_threadsafe_ends_an_in_place_wait(server, long_waits):
    obj = Slow(to_dist=_on(server))

    async def main():
        loop = asyncio.get_running_loop()
        await obj.echo.remote(0)
        ran: list = []
        timer = threading.Timer(0.1, lambda: loop.call_soon_threadsafe(lambda: ran.append(time.monotonic())))
        timer.start()
        value = await obj.nap.remote(1.5)  # the thread's callback runs while this waits
        done = time.monotonic()
        timer.join()
        return value, ran, done

    value, ran, done = asyncio.run(asyncio.wait_for(main(), 30))
    assert value == 1.5 and ran and done - ran[0] > 0.5


def test_timers_and_other_readers_run_during_an_in_place_wait(server, long_waits):
    obj = Slow(to_dist=_on(server))
    a, b = socket.socketpair()

    async def main():
        loop = asyncio.get_running_loop()
        await obj.echo.remote(0)
        ticks: list = []
        read: list = []

        async def ticker():
            for _ in range(10):
                await asyncio.sleep(0.02)
                ticks.append(time.monotonic())

        loop.add_reader(a.fileno(), lambda: read.append((a.recv(10), time.monotonic())))
        loop.call_later(0.1, b.send, b"x")
        tick = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)  # (the ticker's first sleep is scheduled: a timer bounds the wait)
        value = await obj.nap.remote(1.0)
        done = time.monotonic()
        loop.remove_reader(a.fileno())
        await tick
        return value, ticks, read, done

    try:
        value, ticks, read, done = asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        a.close()
        b.close()
    assert value == 1.0 and len(ticks) == 10 and ticks[-1] < done
    assert read and read[0][0] == b"x" and read[0][1] < done - 0.3


def test_a_cancelled_in_place_wait_cancels_the_remote_call(server, long_waits):
    obj = Slow(to_dist=_on(server))

    async def main():
        await obj.echo.remote(0)
        task = asyncio.ensure_future(_await(obj.wait_cancel.remote(20)))
        await asyncio.sleep(0)
        threading.Timer(0.2, lambda: task.get_loop().call_soon_threadsafe(task.cancel)).start()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await obj.echo.remote(1)

    assert asyncio.run(asyncio.wait_for(main(), 30)) == 1
    wait_until(lambda: "cancelled" in obj.log(), 10)
    wait_until(lambda: not _on_loop.busy, 5)


def test_a_cancel_requested_before_the_await_is_not_waited_past(server, long_waits):
    obj = Slow(to_dist=_on(server))

    async def main():
        await obj.echo.remote(0)
        asyncio.current_task().cancel()  # delivered at this task's next suspension: the await below
        t = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await obj.wait_cancel.remote(20)
        return time.monotonic() - t

    assert asyncio.run(asyncio.wait_for(main(), 30)) < 10
    # the remote call was cancelled: still queued when the cancel came, it never ran (at load, the
    # common case); running, it saw mesh.cancelled(). Either way the object is free long before 20 s
    t = time.monotonic()
    assert obj.echo(1) == 1 and time.monotonic() - t < 10
    wait_until(lambda: not _on_loop.busy, 5)


async def _await(fut):
    return await fut
