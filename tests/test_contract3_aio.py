"""Acceptance tests of API.md, third pass: asyncio, streams, cancellation and deadlines as a user mixes them."""

from __future__ import annotations

import asyncio
import time

import pytest

import mesh
from conftest import wait_until


class Gen(metaclass=mesh.RpcMeta):
    """Streams, coroutines and slow calls."""

    def __init__(self):
        self.log = []

    @mesh.stream_func
    def count(self, n, delay=0.0):
        for i in range(n):
            if delay:
                time.sleep(delay)
            yield i

    @mesh.stream_func
    def fail_after(self, n):
        yield from range(n)
        raise ValueError("stream broke")

    @mesh.stream_func
    async def acount(self, n, delay=0.0):
        for i in range(n):
            await asyncio.sleep(delay)
            yield i

    async def sum_stream(self, stream):
        total = 0
        async for item in stream:
            total += item
        return total

    def sum_stream_sync(self, stream):
        return sum(stream)

    async def nap(self, delay, v):
        await asyncio.sleep(delay)
        return v

    def left(self):
        return mesh.time_left()

    def sleepy(self, delay):
        end = time.monotonic() + delay
        while time.monotonic() < end:
            if mesh.cancelled():
                self.log.append("cancelled")
                return "stopped"
            time.sleep(0.01)
        self.log.append("finished")
        return "finished"

    def get_log(self):
        return list(self.log)


class Echo(mesh.AgentBase):
    async def reply(self, x):
        await asyncio.sleep(0.05)
        return mesh.Msg(self.name, f"echo {x.content}")


def _where(srv):
    return {"host": srv.host, "port": srv.port}


async def _ticking(coro, period=0.01):
    """Run ``coro`` while a ticker task counts; (result, ticks)."""
    ticks = 0
    stop = asyncio.Event()

    async def ticker():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(period)

    t = asyncio.ensure_future(ticker())
    try:
        return await coro, ticks
    finally:
        stop.set()
        await t


def test_await_stream_and_placeholder_keep_the_loop_running(server):
    g = Gen(to_dist=_where(server))
    agent = Echo("e", to_dist=_where(server))

    async def main():
        items, ticks1 = await _ticking(_await(g.count(5, 0.1)))
        msg, ticks2 = await _ticking(_await(agent(mesh.Msg("u", "hi"))))
        return items, ticks1, msg, ticks2

    items, ticks1, msg, ticks2 = asyncio.run(asyncio.wait_for(main(), 30))
    assert items == [0, 1, 2, 3, 4] and ticks1 >= 5
    assert isinstance(msg, mesh.Msg) and msg.content == "echo hi" and ticks2 >= 1


async def _await(fut):
    return await fut


def test_async_for_over_a_stream_keeps_the_loop_running(server):
    g = Gen(to_dist=_where(server))

    async def consume():
        return [i async for i in g.count(5, 0.1)]

    items, ticks = asyncio.run(asyncio.wait_for(_ticking(consume()), 30))
    assert items == [0, 1, 2, 3, 4] and ticks >= 5


def test_reply_remote_gives_an_awaitable_message(server):
    agent = Echo("r", to_dist=_where(server))

    async def main():
        a = await agent.reply.remote(mesh.Msg("u", "one"))
        b = await agent.__call__.remote(mesh.Msg("u", "two"))  # __call__ is a forwarded method too
        return a, b

    a, b = asyncio.run(asyncio.wait_for(main(), 30))
    assert a.content == "echo one"
    assert b.content == "echo two"
    ph = agent.__call__.remote(mesh.Msg("u", "three"))
    assert isinstance(ph, mesh.Placeholder) and ph.content == "echo three"
    created = Echo("r2", to_dist=_where(server))  # a proxy straight from creation too
    assert created.__call__.remote(mesh.Msg("u", "four")).result(timeout=30).content == "echo four"
    assert created(mesh.Msg("u", "five")).content == "echo five"


def test_a_remote_object_without_call_is_not_callable(server):
    g = Gen(to_dist=_where(server))
    with pytest.raises(TypeError, match="not callable"):
        g(1)


def test_stream_passed_to_a_coroutine_and_a_sync_method(spawn_server, server):
    other = spawn_server(port=0)
    producer = Gen(to_dist=_where(server))
    consumer = Gen(to_dist=_where(other))
    s = producer.acount(10, 0.01)
    a = consumer.sum_stream(s)
    b = consumer.sum_stream_sync.remote(s)
    assert a.result(timeout=30) == 45 and b.result(timeout=30) == 45
    assert s.result(timeout=30) == list(range(10))  # the caller reads it too, from the start


def test_raising_stream_is_remote_error_of_the_class_after_the_items(server):
    g = Gen(to_dist=_where(server))
    seen = []
    with pytest.raises(ValueError) as ei:
        for item in g.fail_after(3):
            seen.append(item)
    assert seen == [0, 1, 2]
    assert isinstance(ei.value, mesh.RemoteError) and "stream broke" in str(ei.value)

    async def main():
        got = []
        with pytest.raises(mesh.RemoteError):
            async for item in g.fail_after(2):
                got.append(item)
        with pytest.raises(ValueError):
            await g.fail_after(1)
        return got

    assert asyncio.run(asyncio.wait_for(main(), 30)) == [0, 1]


def test_a_long_stream_keeps_order(server):
    g = Gen(to_dist=_where(server))
    assert list(g.count(5000)) == list(range(5000))


def test_cancel_of_a_finished_stream_is_false_and_it_still_reads(server):
    g = Gen(to_dist=_where(server))
    s = g.count(3)
    assert s.result(timeout=30) == [0, 1, 2]
    assert s.done()
    assert s.cancel() is False
    assert list(s) == [0, 1, 2]


def test_nested_deadlines_the_earlier_wins(server):
    g = Gen(to_dist=_where(server))
    with mesh.deadline(30):
        with mesh.deadline(2):
            inner = g.left()
        outer = g.left()
        with mesh.deadline(100):  # an inner longer deadline does not extend the outer one
            longer = g.left()
    assert inner is not None and 0 < inner <= 2
    assert outer is not None and 2 < outer <= 30
    assert longer is not None and longer <= 30
    assert g.left() is None


def test_deadline_in_asyncio_raises_at_the_deadline_and_cancels_the_call(server):
    g = Gen(to_dist=_where(server))

    async def main():
        t0 = time.monotonic()
        with pytest.raises(mesh.DeadlineExceeded):
            async with mesh.deadline(0.5):
                await g.sleepy.remote(10)
        return time.monotonic() - t0

    took = asyncio.run(asyncio.wait_for(main(), 30))
    assert took < 3
    wait_until(lambda: g.get_log() == ["cancelled"], timeout=10)


def test_wait_mixes_every_future_kind(server):
    g = Gen(to_dist=_where(server))
    agent = Echo("w", to_dist=_where(server))
    g2 = Gen(to_dist=_where(server))
    futs = [g.nap(0.05, "x"), agent(mesh.Msg("u", "m")), g2.count(3)]
    done, pending = mesh.wait(futs, num_returns=3, timeout=30)
    assert len(done) == 3 and pending == []
    assert futs[0].result() == "x" and futs[1].content == "echo m" and futs[2].result() == [0, 1, 2]


def test_awaiting_one_future_from_two_tasks(server):
    g = Gen(to_dist=_where(server))

    async def main():
        fut = g.nap(0.2, 42)
        return await asyncio.gather(_await(fut), _await(fut))

    assert asyncio.run(asyncio.wait_for(main(), 30)) == [42, 42]


def test_cancel_a_stream_while_it_is_produced(server):
    g = Gen(to_dist=_where(server))
    s = g.count(1000, 0.05)
    it = iter(s)
    assert next(it) == 0
    assert s.cancel() is True
    with pytest.raises(mesh.Cancelled):
        for _ in it:
            pass
    with pytest.raises(mesh.Cancelled):
        s.result(timeout=10)
    # the object is free again: its next call runs
    assert list(g.count(2)) == [0, 1]


class Quick(metaclass=mesh.RpcMeta):
    async def hello(self):
        await asyncio.sleep(0)
        return time.monotonic()


class Reader(metaclass=mesh.RpcMeta):
    async def drain(self, stream):
        items = [i async for i in stream]
        return items, time.monotonic()


def test_a_server_coroutine_reading_a_stream_frees_the_loop_for_other_objects(spawn_server):
    busy = spawn_server(port=0, capacity=1)
    producer_srv = spawn_server(port=0)
    producer = Gen(to_dist=_where(producer_srv))
    reader = Reader(to_dist=_where(busy))
    quick = Quick(to_dist=_where(busy))
    drained = reader.drain(producer.count(10, 0.1))  # about 1 s of items
    hello_at = quick.hello().result(timeout=30)
    items, drained_at = drained.result(timeout=30)
    assert items == list(range(10))
    assert hello_at < drained_at - 0.3  # answered while the reader still waited for items


def test_stream_result_timeout_then_the_whole_list(server):
    g = Gen(to_dist=_where(server))
    s = g.count(4, 0.2)
    with pytest.raises(mesh.CallTimeout):
        s.result(timeout=0.1)
    assert not s.done()
    assert s.result(timeout=30) == [0, 1, 2, 3] and s.done()


class Coop(metaclass=mesh.RpcMeta):
    @mesh.async_func
    def work(self, seconds, v=1):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            mesh.check_cancelled()
            time.sleep(0.01)
        return v

    def total(self, xs):
        return sum(xs)


def test_a_consumer_of_a_cancelled_future_gets_cancelled(spawn_server):
    a, b = spawn_server(port=0), spawn_server(port=0)
    producer = Coop(to_dist=_where(a))
    consumer = Coop(to_dist=_where(b))
    fut = producer.work(30)
    waiting = consumer.total.remote([fut])
    assert fut.cancel() is True
    t0 = time.monotonic()
    with pytest.raises(mesh.Cancelled):
        waiting.result(timeout=20)
    with pytest.raises(mesh.Cancelled):
        fut.result(timeout=20)
    assert time.monotonic() - t0 < 20
    assert consumer.total([1, 2]) == 3 and producer.work(0, 5).result(timeout=20) == 5
