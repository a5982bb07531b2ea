"""A loop's plain calls behind a burst go by the threaded async lane's send (``mesh.client._aio_fast``
with ``_async_lane.send``): values, one caller's order when awaited and gathered calls mix, errors
keeping their type, and cancelling (or shielding) a gathered call that went that way.
"""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

import mesh
from cancel_agents import Worker
from conftest import wait_until
from mesh.client import _aio_fast
from mesh.client._lean import kept_body


class Ledger(metaclass=mesh.RpcMeta):
    def __init__(self) -> None:
        self.seen: list = []

    def note(self, x):
        self.seen.append(x)
        return x

    def fail(self, x):
        raise KeyError(f"bad {x}")

    def log(self) -> list:
        return list(self.seen)


def _on(srv):
    return {"host": "127.0.0.1", "port": srv.port}


@pytest.fixture
def spied(monkeypatch):
    """The names of the calls sent by the lane's send from a loop."""
    names: list = []
    send = _aio_fast._lane_send
    monkeypatch.setattr(_aio_fast, "_lane_send", lambda *a: (names.append(a[1]), send(*a))[1])
    return names


def test_gathered_and_awaited_calls_keep_values_and_one_callers_order(server, spied):
    book = Ledger(to_dist=_on(server))
    n = 1500

    async def main():
        first = [book.note.remote(i) for i in range(n)]
        values = await asyncio.gather(*first)
        single = await book.note.remote(n)  # awaited right after: behind them
        second = await asyncio.gather(*(book.note.remote(i) for i in range(n + 1, 2 * n)),
                                      book.note.remote(2 * n))
        assert book.note(2 * n + 1) == 2 * n + 1  # a sync call from the loop's thread: behind them all
        return values, single, second, first

    values, single, second, first = asyncio.run(asyncio.wait_for(main(), 120))
    assert values == list(range(n)) and single == n and second == list(range(n + 1, 2 * n + 1))
    assert spied.count("note") > n // 2  # most of each burst went by the lane's send
    assert book.log() == list(range(2 * n + 2))
    assert all(kept_body(f.__dict__["_mesh_call"]) for f in first[-100:])  # read, the body alone kept
    assert [f.result() for f in first[-5:]] == list(range(n - 5, n))  # still readable off the loop


def test_errors_behind_a_burst_keep_their_type(server, spied):
    book = Ledger(to_dist=_on(server))

    async def main():
        out = await asyncio.gather(*(book.fail.remote(i) if i % 100 == 99 else book.note.remote(i)
                                     for i in range(500)), return_exceptions=True)
        with pytest.raises(KeyError, match="bad 7"):
            await asyncio.gather(*(book.note.remote(i) for i in range(300)), book.fail.remote(7))
        return out

    out = asyncio.run(asyncio.wait_for(main(), 60))
    for i, v in enumerate(out):
        if i % 100 == 99:
            assert isinstance(v, KeyError) and isinstance(v, mesh.RemoteError) and f"bad {i}" in str(v)
        else:
            assert v == i
    assert "fail" in spied


def test_cancelling_a_gather_cancels_a_call_sent_behind_its_burst_and_shield_keeps_one(server, spied):
    w = Worker(to_dist=_on(server))

    async def main():
        # a call from a thread keeps the object busy on the I/O thread's connection: the loop's calls
        # go behind it there, by the lane's send (as behind a burst the loop's lane handed over)
        await asyncio.to_thread(w.stubborn, 0.5)
        task = asyncio.ensure_future(asyncio.gather(*(w.mark(f"m{i}") for i in range(200)), w.nap(30)))
        await asyncio.sleep(0)
        wait_until(lambda: "nap-start" in w.log, timeout=20)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.to_thread(w.stubborn, 0.5)
        kept = asyncio.gather(*(w.mark(f"k{i}") for i in range(200)), w.nap(0.3, "shielded"))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(kept), 0.05)
        return (await kept)[-1]

    assert asyncio.run(asyncio.wait_for(main(), 60)) == "napped"
    assert spied.count("nap") == 2  # both naps went by the lane's send, behind their bursts
    wait_until(lambda: "nap-cancelled" in w.log, timeout=10)
    assert "shielded-cancelled" not in w.log and "shielded-finally" in w.log


def test_a_gathered_future_is_freed_by_its_reference_count_not_the_garbage_collector(server):
    book = Ledger(to_dist=_on(server))
    refs: list = []

    async def main(make):
        futs = [make(i) for i in range(400)]
        refs.extend(weakref.ref(f) for f in futs)
        assert await asyncio.gather(*futs) == list(range(400))

    for make in (book.note.remote, book.note.remote):  # (the second: behind the first's lane calls too)
        gc.collect()
        gc.disable()
        try:
            asyncio.run(asyncio.wait_for(main(make), 60))
            assert [r for r in refs if r() is not None] == []  # no cycle through gather's callback
        finally:
            gc.enable()
        refs.clear()
