"""The asyncio lane's leaner await (helper aio3): what its shortcuts must keep.

A lane future keeps a plain ``ok`` reply as its body and still gives ``(header, body, buffers)``
to every reader (``result()``, a fall-back's copy); its ``on_end`` (the per-object count of calls in
flight on a lane, which keeps one caller's order) runs exactly once, before the awaiting Task
wakes, however many completions race; a submit that raises takes its count back; the reader
asks ``EVENTS`` once per reply only when the resumed Task's send did not ask already, and an
await chain never stalls (each reply's edge re-armed); cancelling an awaiting task on the lean
path cancels its remote call and leaves nothing counted; a coroutine that reads a lane
future with ``.result()`` (the loop's thread drives the lane) gets the same value.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import mesh
import transport
import transport._lanes as _lanes
from conftest import wait_until
from mesh.client import _on_loop
from mesh.client._lean import Replied
from transport._lane_future import OK, LaneFuture
from transport._lane_waiter import _current_task


class Echo(metaclass=mesh.RpcMeta):
    def __init__(self) -> None:
        self.seen: list = []

    def echo(self, x):
        self.seen.append(x)
        return x

    def pair(self, x):
        return (x, x)

    def log(self) -> list:
        return list(self.seen)

    def wait_cancel(self, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if mesh.cancelled():
                self.seen.append("cancelled")
                return True
            time.sleep(0.01)
        return False


def _on(srv):
    return {"host": "127.0.0.1", "port": srv.port}


class _FakeLane:
    ident = threading.get_ident()
    inline = False
    closed = False

    def driven(self) -> bool:
        return True


def test_a_plain_ok_kept_as_its_body_reads_as_the_whole_reply():
    fut = LaneFuture(_FakeLane(), 7, ({"id": 7}, b"", ()), None)
    fut.set_result(b"\x05")
    assert fut.result() == (OK, b"\x05", ())
    assert fut.exception() is None
    other = LaneFuture(_FakeLane(), 8, ({"id": 8}, b"", ()), None)
    other._copy(fut)  # a fall-back's copy from a future holding a body: the same reading
    assert other.result() == (OK, b"\x05", ())
    whole = LaneFuture(_FakeLane(), 9, ({"id": 9}, b"", ()), None)
    reply = ({"op": "err", "re": 9}, b"x", [])
    whole.set_result(reply)
    assert whole.result() is reply


def test_on_end_runs_once_before_callbacks_and_a_second_completion_changes_nothing():
    order: list = []
    fut = LaneFuture(_FakeLane(), 1, ({"id": 1}, b"", ()), None)
    fut.on_end = (lambda a, b: order.append(("end", a, b)), "obj", "lane")
    fut.add_done_callback(lambda f: order.append("callback"))
    fut.set_result(b"\x01")
    fut.set_exception(RuntimeError("late"))  # (a fall-back racing the reader: ignored)
    fut.set_result(b"\x02")
    assert order == [("end", "obj", "lane"), "callback"]
    assert fut.result() == (OK, b"\x01", ())
    failing = LaneFuture(_FakeLane(), 2, ({"id": 2}, b"", ()), None)
    failing.on_end = (lambda a, b: 1 / 0, None, None)  # a failing hook does not break the completion
    failing.set_exception(KeyError("k"))
    with pytest.raises(KeyError):
        failing.result()


def test_current_task_reads_what_asyncio_reads():
    async def main():
        loop = asyncio.get_running_loop()
        assert _current_task(loop) is asyncio.current_task()

    asyncio.run(main())


def test_an_await_chain_reads_every_reply_and_counts_nothing_after(server):
    obj = Echo(to_dist=_on(server))

    async def main():
        got = [await obj.echo.remote(i) for i in range(300)]
        got += [await obj.echo.remote({"k": i}) for i in range(3)]  # a dict: still plain
        got.append(await obj.pair.remote(1))  # a tuple: the codec decodes it
        fut = obj.echo.remote("x")
        await fut
        return got, fut

    got, fut = asyncio.run(asyncio.wait_for(main(), 60))
    assert got[:300] == list(range(300)) and got[300:303] == [{"k": i} for i in range(3)]
    assert got[303] == (1, 1)
    assert type(fut.__dict__["_mesh_call"]) is Replied and fut.result() == "x"
    assert not _on_loop.busy  # every call counted in flight on the lane was counted out
    assert obj.log()[-1] == "x"


def test_a_submit_that_raises_takes_its_count_back(server, monkeypatch):
    obj = Echo(to_dist=_on(server))

    async def main():
        assert await obj.echo.remote(0) == 0  # the lane exists

        def broken(self, fut, frames, timeout=None):
            raise transport.PeerUnavailable(self.endpoint, "the socket went away")

        monkeypatch.setattr(_lanes.Lane, "submit", broken)
        with pytest.raises(mesh.ServerUnavailable):  # (translated as the general path translates it)
            obj.echo.remote(1)
        monkeypatch.undo()
        assert not _on_loop.busy
        return await obj.echo.remote(2)

    assert asyncio.run(asyncio.wait_for(main(), 30)) == 2
    assert obj.log() == [0, 2]


def test_a_cancelled_await_on_the_lean_path_cancels_the_call_and_counts_nothing(server):
    obj = Echo(to_dist=_on(server))

    async def main():
        assert await obj.echo.remote(0) == 0
        fut = obj.wait_cancel.remote(20)
        task = asyncio.ensure_future(_await(fut))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await obj.echo.remote(1)

    assert asyncio.run(asyncio.wait_for(main(), 30)) == 1
    wait_until(lambda: "cancelled" in obj.log(), 10)
    assert obj.log()[:2] == [0, "cancelled"] and obj.log()[-1] == 1
    wait_until(lambda: not _on_loop.busy, 5)


async def _await(fut):
    return await fut


def test_a_coroutine_reading_a_lane_future_with_result_drives_the_lane(server):
    obj = Echo(to_dist=_on(server))

    async def main():
        assert await obj.echo.remote(0) == 0
        fut = obj.echo.remote(5)
        assert type(fut.__dict__["_mesh_call"]) is LaneFuture
        value = fut.result(10)  # blocks this loop's thread: it polls the lane itself
        after = await obj.echo.remote(6)
        return value, after

    assert asyncio.run(asyncio.wait_for(main(), 30)) == (5, 6)
