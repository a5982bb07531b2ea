"""A Stream made under ``mesh.deadline()``: every way of reading it ends at the deadline with
``DeadlineExceeded`` (not ``Cancelled``, not later), also when the producer is unreachable; one
that ended in time is read whole later; ``mesh.wait`` / ``as_completed`` end at their futures'
deadlines."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

import mesh
from cancel_agents import Worker
from conftest import wait_until
from mesh import RpcMeta, stream_func
from tests.conftest import freeze


class Slow(metaclass=RpcMeta):
    """Streams one item, then waits (cooperatively) for a long time."""

    def __init__(self) -> None:
        self.closed = 0

    @stream_func
    def drip(self, n: int = 3, nap: float = 30.0):
        try:
            for i in range(n):
                yield i
                end = time.monotonic() + nap
                while time.monotonic() < end and not mesh.cancelled():
                    time.sleep(0.005)
        finally:
            self.closed += 1

    @stream_func
    async def adrip(self, n: int = 3, nap: float = 30.0):
        try:
            for i in range(n):
                yield i
                await asyncio.sleep(nap)
        finally:
            self.closed += 1

    @stream_func
    def quick(self, n: int):
        yield from range(n)


def on(srv) -> dict:
    return {"host": srv.host, "port": srv.port}


def _read_all(stream, how: str):
    if how == "result":
        return stream.result()
    if how == "for":
        return list(stream)
    if how == "async for":
        async def collect():
            return [x async for x in stream]
        return asyncio.run(collect())

    async def awaited():
        return await stream
    return asyncio.run(awaited())


READS = ["result", "for", "async for", "await"]


@pytest.mark.parametrize("method", ["drip", "adrip"])
@pytest.mark.parametrize("how", READS)
def test_every_read_of_a_stream_ends_at_its_deadline_with_deadline_exceeded(server, how, method):
    slow = Slow(to_dist=on(server))
    t0 = time.monotonic()
    with mesh.deadline(0.5):
        stream = getattr(slow, method)()
    with pytest.raises(mesh.DeadlineExceeded) as info:
        _read_all(stream, how)
    took = time.monotonic() - t0
    assert not isinstance(info.value, mesh.Cancelled)
    assert 0.45 <= took < 5
    wait_until(lambda: slow.closed == 1, timeout=10)  # and the generator was closed there
    with pytest.raises(mesh.DeadlineExceeded):  # kept: every later read says the same
        stream.result()
    assert stream.done()


def test_items_made_before_the_deadline_are_read_then_deadline_exceeded(server):
    slow = Slow(to_dist=on(server))
    with mesh.deadline(0.5):
        stream = slow.drip()
    got = []
    with pytest.raises(mesh.DeadlineExceeded):
        for item in stream:
            got.append(item)
    assert got == [0]


@pytest.mark.parametrize("how", READS)
def test_a_stream_read_ends_at_its_deadline_when_the_producer_is_unreachable(spawn_server, how):
    srv = spawn_server()
    slow = Slow(to_dist=on(srv))
    assert list(slow.quick(2)) == [0, 1]  # connected and served once
    freeze(srv.pid)
    try:
        t0 = time.monotonic()
        with mesh.deadline(0.5):
            stream = slow.quick(3)
        with pytest.raises(mesh.DeadlineExceeded):
            _read_all(stream, how)
        assert time.monotonic() - t0 < 5
    finally:
        os.kill(srv.pid, signal.SIGCONT)


def test_a_stream_that_ended_before_its_deadline_is_read_whole_later(server):
    slow = Slow(to_dist=on(server))
    with mesh.deadline(0.5):
        stream = slow.quick(5)
        again = slow.quick(3)
    wait_until(lambda: stream.done() and again.done(), timeout=10)
    time.sleep(0.5)  # past the deadline: the streams ended in time, their items are all there
    assert stream.result() == [0, 1, 2, 3, 4]
    assert list(again) == [0, 1, 2]


@pytest.mark.parametrize("api", ["wait", "as_completed"])
def test_wait_and_as_completed_end_at_the_deadline_of_their_futures(spawn_server, api):
    srv = spawn_server()
    w = Worker(to_dist=on(srv))
    slow = Slow(to_dist=on(srv))
    assert w.mark("x").result() == "x"
    freeze(srv.pid)  # nothing will answer: only the deadline can end the wait
    try:
        t0 = time.monotonic()
        with mesh.deadline(0.5):
            futs = [w.nap(30), w.nap(30), slow.drip()]
        if api == "wait":
            done, pending = mesh.wait(futs, num_returns=3)
            assert pending == [] and len(done) == 3
        else:
            assert len(list(mesh.as_completed(futs))) == 3
        assert time.monotonic() - t0 < 5
        for fut in futs:
            with pytest.raises(mesh.DeadlineExceeded):
                fut.result()
    finally:
        os.kill(srv.pid, signal.SIGCONT)


def test_wait_with_a_timeout_shorter_than_the_deadline_returns_pending_futures(server):
    w = Worker(to_dist=on(server))
    with mesh.deadline(20):
        fut = w.nap(30)
    done, pending = mesh.wait([fut], timeout=0.2)
    assert done == [] and pending == [fut]
    assert fut.cancel() is True


class Deaf(metaclass=RpcMeta):
    """A sync generator that never looks at mesh.cancelled(): only its next yield can stop it."""

    def __init__(self) -> None:
        self.closed = 0

    @stream_func
    def ticks(self):
        try:
            while True:
                yield time.monotonic()
                time.sleep(0.01)
        finally:
            self.closed += 1


def test_a_deadline_closes_a_sync_generator_that_never_checks(server):
    deaf = Deaf(to_dist=on(server))
    with mesh.deadline(0.3):
        stream = deaf.ticks()
    with pytest.raises(mesh.DeadlineExceeded):
        stream.result()
    wait_until(lambda: deaf.closed == 1, timeout=10)


def test_the_generic_cancel_closes_a_sync_generator_that_never_checks(server):
    from mesh.client._cancel import cancel_future  # op cancel (what Ctrl-C and the cascade send)

    deaf = Deaf(to_dist=on(server))
    stream = deaf.ticks()
    assert isinstance(next(iter(stream)), float)
    assert cancel_future(stream) is True
    wait_until(lambda: deaf.closed == 1, timeout=10)
