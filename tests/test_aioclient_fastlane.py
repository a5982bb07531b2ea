"""The await fast lane (``mesh.client._aio_fast``): plain async calls made on a running loop, and their awaits.

What must hold: the request carries what the general path sends (the same header fields and
values, from a template); the await is woken by the lane's reader (no ``value_of``, no
done-callback); plain values, errors and values the codec must decode read exactly as
``result()`` reads them; results are released; calls that are not plain take the general path
and one caller's order to an object holds across both; the lane's reader knows a plain ``ok``
by its bytes; a cancelled await cancels the remote call and a second await still works; the
reader resumes one awaiting Task in place per call and schedules the others, so an await chain
leaves the loop to its other tasks; a closed loop and its lane are not kept alive (a lane's
connect timer and the general path's waker used to hold the loop).
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import types
import weakref

import msgpack
import pytest

import mesh
from conftest import wait_until
from mesh.client import _aio_fast
from mesh.client._client import get_client
from mesh.client._lean import Replied
from mesh.client._replies import decode_reply
from transport import _lanes
from transport._lane_future import LaneFuture
from transport._templates import ok_header, ok_rid


class Log(metaclass=mesh.RpcMeta):
    def __init__(self) -> None:
        self.seen: list = []

    def note(self, x, *more, **kw):
        self.seen.append(x)
        return x

    def pair(self, x):
        return (x, x)

    def fail(self, x):
        raise KeyError(x)

    def log(self) -> list:
        return list(self.seen)

    def cancelled_after(self, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if mesh.cancelled():
                self.seen.append("cancelled")
                return True
            time.sleep(0.01)
        return False


def _on(srv):
    return {"host": "127.0.0.1", "port": srv.port}


def _status(address: str) -> dict:
    client = get_client()
    return decode_reply(client.request(address, {"op": "status"}, None, timeout=5).result(10), address)


def test_ok_rid_reads_the_id_of_a_plain_ok_header_and_nothing_else():
    for rid in (0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63):
        assert ok_rid(ok_header(rid)) == rid
        assert msgpack.unpackb(ok_header(rid)) == {"op": "ok", "re": rid}
    assert ok_rid(msgpack.packb({"op": "ok", "re": 5, "big": 1})) is None
    assert ok_rid(msgpack.packb({"op": "err", "re": 5})) is None
    assert ok_rid(msgpack.packb({"re": 5, "op": "ok"})) is None  # another order: unpacked as any header
    assert ok_rid(ok_header(3)[:-1] + b"\xcc") is None  # truncated
    assert ok_rid(ok_header(3)[:-1] + b"\xd0\x05") is None  # an int8: not what ok_header makes


def test_a_plain_call_sends_the_general_paths_header_from_a_template(server, monkeypatch):
    log = Log(to_dist=_on(server))
    sent: list = []
    submit = _lanes.Lane.submit

    def spy(self, fut, frames, timeout=None):  # every request on a lane, both paths
        sent.append((dict(fut.resend[0]), frames[1]))
        return submit(self, fut, frames, timeout)

    monkeypatch.setattr(_lanes.Lane, "submit", spy)

    async def main():
        fut = log.note.remote(1, "x", k=2.5)
        assert await fut == 1
        assert await log.note.remote([1, 2]) == [1, 2]  # a list: the general path (the codec's walk)
        return fut.__dict__["_mesh_task"]

    task = asyncio.run(asyncio.wait_for(main(), 30))
    (header, packed), (general, packed2) = sent
    assert msgpack.unpackb(packed) == header and msgpack.unpackb(packed2) == general
    assert header["task"] == task and header["keep"] == 1 and header["m"] == "note"
    assert set(header) == set(general)  # the same fields as the general path's header
    assert {k: v for k, v in header.items() if k not in ("chain", "task", "id")} == {
        k: v for k, v in general.items() if k not in ("chain", "task", "id")}


def test_the_await_is_woken_by_the_lanes_reader_and_reads_what_result_reads(server, monkeypatch):
    log = Log(to_dist=_on(server))
    slow_reads: list = []
    value_of = _aio_fast.value_of

    def counted(fut):
        slow_reads.append(fut)
        return value_of(fut)

    monkeypatch.setattr(_aio_fast, "value_of", counted)

    async def main():
        values = [await log.note.remote(i) for i in range(20)]
        fut = log.note.remote("s")
        assert await fut == "s"
        assert type(fut.__dict__["_mesh_call"]) is Replied  # only the body is kept
        assert await fut == "s" and fut.result() == "s"  # read again: the value
        assert not slow_reads
        assert await log.pair.remote(3) == (3, 3)  # a tuple (an ext value): decoded by the codec
        failing = log.fail.remote("k")
        with pytest.raises(KeyError) as exc_info:
            await failing
        with pytest.raises(KeyError) as again:
            failing.result()
        assert type(exc_info.value) is type(again.value)
        assert len(slow_reads) == 2
        return values

    assert asyncio.run(asyncio.wait_for(main(), 30)) == list(range(20))


def test_results_of_awaited_calls_are_released(server):
    log = Log(to_dist=_on(server))
    before = _status(server.address)["results"]

    async def main():
        for i in range(50):
            assert await log.note.remote(i) == i

    asyncio.run(asyncio.wait_for(main(), 30))
    gc.collect()
    get_client().flush_releases()
    assert wait_until(lambda: _status(server.address)["results"] <= before, timeout=10, raise_=False), \
        _status(server.address)


def test_plain_and_general_calls_from_a_loop_keep_one_callers_order(server):
    log = Log(to_dist=_on(server))

    async def main():
        futs = []
        for i in range(30):
            if i % 3 == 0:
                futs.append(log.note.remote(i))  # plain: the fast lane
            elif i % 3 == 1:
                futs.append(log.note.remote(i, [i]))  # a list argument: the general path
            else:
                with mesh.deadline(30):  # under a deadline: the general path
                    futs.append(log.note.remote(i))
        assert log.note(30) == 30  # a sync call from the loop's thread: behind them all
        return [await f for f in futs]

    assert asyncio.run(asyncio.wait_for(main(), 60)) == list(range(30))
    assert log.log() == list(range(31))


def test_a_cancelled_await_cancels_the_remote_call_and_the_future_still_answers(server):
    log = Log(to_dist=_on(server))

    async def main():
        fut = log.cancelled_after.remote(20)
        task = asyncio.ensure_future(_awaited(fut))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(mesh.Cancelled):
            await fut  # a second await of the same future: the outcome of the cancelled call

    t0 = time.monotonic()
    asyncio.run(asyncio.wait_for(main(), 30))
    assert time.monotonic() - t0 < 15
    assert wait_until(lambda: log.log() == ["cancelled"], timeout=10, raise_=False), log.log()


async def _awaited(fut):
    return await fut


def _fake_lane():
    return types.SimpleNamespace(ident=threading.get_ident(), inline=False, driven=lambda: True)


def test_the_reader_resumes_one_awaiting_task_in_place_and_schedules_the_others():
    async def main():
        loop = asyncio.get_running_loop()
        lane = _fake_lane()
        futs = [LaneFuture(lane, i, (None, None, ()), None) for i in range(3)]
        resumed: list = []
        seen: list = []

        async def wait(i):
            await futs[i].wait_on_loop(loop)
            resumed.append(i)

        tasks = [asyncio.ensure_future(wait(i)) for i in range(3)]
        await asyncio.sleep(0)  # all three wait on their Waiter

        def reader():  # what Lane.readable does with three replies
            lane.inline = True
            for f in futs:
                f.set_result(({"op": "ok"}, b"\x01", []))
            seen.append(list(resumed))
            lane.inline = False

        loop.call_soon(reader)
        await asyncio.gather(*tasks)
        assert seen == [[0]]  # the first one right there, the other two in the next loop turn
        assert resumed == [0, 1, 2]

        inside = LaneFuture(lane, 9, (None, None, ()), None)  # completed inside a task: scheduled
        task = asyncio.ensure_future(wait_on(inside, loop))
        await asyncio.sleep(0)
        lane.inline = True
        inside.set_result(({"op": "ok"}, b"\x01", []))
        assert not task.done()
        assert await task == "woke"

        cancelled = LaneFuture(lane, 10, (None, None, ()), None)
        task = asyncio.ensure_future(wait_on(cancelled, loop))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        cancelled.set_result(({"op": "ok"}, b"\x01", []))  # late: nobody to wake, nothing raised

    asyncio.run(asyncio.wait_for(main(), 10))


async def wait_on(fut, loop):
    await fut.wait_on_loop(loop)
    return "woke"


def test_an_await_chain_leaves_the_loop_to_its_other_tasks(server):
    log = Log(to_dist=_on(server))

    async def main():
        ticks = [0]
        stop = asyncio.Event()

        async def ticker():
            while not stop.is_set():
                ticks[0] += 1
                await asyncio.sleep(0)

        t = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        start = ticks[0]
        for i in range(200):
            assert await log.note.remote(i) == i
        stop.set()
        await t
        return ticks[0] - start

    assert asyncio.run(asyncio.wait_for(main(), 60)) >= 100  # at least a loop turn per await, about


def test_a_closed_loop_and_its_lane_are_not_kept_alive(server):
    log = Log(to_dist=_on(server))
    refs: list = []

    async def main():
        refs.append(weakref.ref(asyncio.get_running_loop()))
        fut = log.note.remote(1)
        refs.append(weakref.ref(fut.__dict__["_mesh_call"].lane))
        assert await log.note.remote([2]) == [2]  # the general path (its waker) too
        assert await asyncio.gather(*(log.note.remote(i) for i in range(40))) == list(range(40))
        return await fut

    assert asyncio.run(asyncio.wait_for(main(), 30)) == 1
    assert wait_until(lambda: gc.collect() is not None and refs[0]() is None, timeout=5, raise_=False)
    assert wait_until(lambda: gc.collect() is not None and refs[1]() is None, timeout=5, raise_=False)
