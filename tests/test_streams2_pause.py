"""A generator paused by back-pressure keeps its object (one call at a time), but never deadlocks
with a reader that calls back into the producer's object: the reader's call chain may enter."""

from __future__ import annotations

import asyncio
import time

import pytest

import mesh
from conftest import wait_until
from mesh import RpcMeta, stream_func

WINDOW = 8


class Producer(metaclass=RpcMeta):
    def __init__(self) -> None:
        self.made = 0
        self.notes: list[int] = []

    @stream_func
    def many(self, n: int):
        for i in range(n):
            self.made = i + 1
            yield i

    @stream_func
    async def amany(self, n: int):
        for i in range(n):
            self.made = i + 1
            yield i

    def note(self, x: int) -> int:
        self.notes.append(x)
        return len(self.notes)

    async def anote(self, x: int) -> int:
        self.notes.append(x)
        return len(self.notes)

    def loop_back(self, me: Producer, n: int) -> int:
        """Reads a stream of this very object and calls it back for every item."""
        return sum(me.note(x) > 0 for x in me.many(n))


class Reader(metaclass=RpcMeta):
    def consume(self, producer: Producer, stream) -> int:
        """Calls the producer back for every item (from another object, in another call chain)."""
        return sum(producer.note(x) > 0 for x in stream)

    async def aconsume(self, producer: Producer, stream) -> int:
        count = 0
        async for x in stream:
            await producer.anote(x)
            count += 1
        return count


@pytest.fixture
def small_window(server):
    server._servicer.streams.window = WINDOW  # paused 8 items ahead of the slowest reader
    return server


def on(srv) -> dict:
    return {"host": srv.host, "port": srv.port}


N = 10 * WINDOW


def test_a_client_loop_calling_the_producer_back_does_not_deadlock(small_window):
    p = Producer(to_dist=on(small_window))
    count = 0
    for x in p.many(N):
        assert p.note(x) == count + 1  # the generator is paused a window ahead: the loop's chain enters
        count += 1
    assert count == N and p.notes == list(range(N))


def test_an_async_client_loop_calling_the_producer_back_does_not_deadlock(small_window):
    p = Producer(to_dist=on(small_window))

    async def main():
        got = []
        async for x in p.amany(N):
            await p.anote(x)
            got.append(x)
        return got

    assert asyncio.run(asyncio.wait_for(main(), 30)) == list(range(N))
    assert p.notes == list(range(N))


@pytest.mark.parametrize("method", ["consume", "aconsume"])
def test_a_reader_on_another_object_calling_the_producer_back_does_not_deadlock(small_window, method):
    p = Producer(to_dist=on(small_window))
    r = Reader(to_dist=on(small_window))
    assert getattr(r, method).remote(p, p.many(N)).result(timeout=30) == N
    assert sorted(p.notes) == list(range(N))


def test_an_object_reading_its_own_stream_and_calling_itself_does_not_deadlock(small_window):
    p = Producer(to_dist=on(small_window))
    assert p.loop_back.remote(p, N).result(timeout=30) == N


def test_other_calls_still_wait_while_the_generator_is_paused(small_window):
    p = Producer(to_dist=on(small_window))
    stream = p.many(N)
    wait_until(lambda: p.made >= WINDOW, timeout=10)  # paused: a window ahead (nobody reads yet)
    other = p.note.remote(-1)  # another call chain (no reading is open here): the object is the generator's
    time.sleep(0.3)  # (not synchronisation: checks that it does not run meanwhile)
    assert not other.done() and p.notes == []
    assert list(stream) == list(range(N))
    assert other.result(timeout=10) == 1  # it ran once the generator ended
    assert p.notes == [-1]


def test_a_for_loop_gives_the_calls_of_its_body_one_chain_until_it_ends(small_window):
    p = Producer(to_dist=on(small_window))
    assert mesh._core.context.current_chain() is None
    chains = set()
    for _ in p.many(3):
        chains.add(mesh._core.context.current_chain())
    assert len(chains) == 1 and None not in chains
    assert mesh._core.context.current_chain() is None  # reset when the loop ended
    for _ in p.many(WINDOW * 3):
        break
    assert mesh._core.context.current_chain() is None  # and when it was left early
