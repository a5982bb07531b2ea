"""Gathered mesh futures (``mesh.client._aio_batch``, ``mesh.client._aio_fast``): many done-callbacks
of one loop resolved together, and the calls behind a burst sent without the general path.

What must hold: a callback is never called inside ``add_done_callback`` (as asyncio's futures), but
in one loop callback with the others of that turn; replies that one I/O turn completes wake the loop
once, at the end of that turn (not once per reply); a removed callback is not called; a callback that
raises goes to the loop's exception handler and the others still run; a loop's resolver does not keep
the loop alive; on a real server, a gather of plain ``.remote()`` calls gives every value, in the
caller's order, with none of them taking the general path (also behind a burst the lane handed to the
I/O thread), and errors keep their type.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref

import pytest

import mesh
import mesh.client._proxy as proxy_mod
from mesh.client import _aio_batch, _aio_fast
from mesh.client._lean import Replied
from transport import ReplyFuture


class Book(metaclass=mesh.RpcMeta):
    def __init__(self) -> None:
        self.seen: list = []

    def note(self, x):
        self.seen.append(x)
        return x

    def fail(self, x):
        raise ValueError(f"bad {x}")

    def log(self) -> list:
        return list(self.seen)


def _on(srv):
    return {"host": "127.0.0.1", "port": srv.port}


class _Fut:
    """A stand-in mesh future: ``_mesh_try_read`` as the real one answers it."""

    def __init__(self, source: ReplyFuture) -> None:
        self.source = source
        self.__dict__.update(_mesh_call=source, _mesh_value=object(), _mesh_fetch=None, _mesh_exc=None)

    def _mesh_try_read(self):
        if not self.source.done():
            return False, self.source
        return True, self.source.result()


class _Node:
    """The node a resolver wakes from: its I/O thread is the test's ``io`` thread; ``call_soon`` from
    there runs at the end of that thread's turn (here: when the test says)."""

    closed = False

    def __init__(self) -> None:
        self.io: int | None = None
        self.at_turn_end: list = []

    def on_io_thread(self) -> bool:
        return threading.get_ident() == self.io

    def call_soon(self, fn, *args) -> None:
        self.at_turn_end.append((fn, args))


def _counting(loop):
    wakes = []
    plain = loop.call_soon_threadsafe

    def call_soon_threadsafe(fn, *args, **kw):
        wakes.append(fn)
        return plain(fn, *args, **kw)

    loop.call_soon_threadsafe = call_soon_threadsafe
    return wakes


def test_callbacks_run_after_add_in_one_loop_callback_and_a_burst_of_one_io_turn_wakes_the_loop_once():
    node = _Node()

    async def main():
        loop = asyncio.get_running_loop()
        wakes = _counting(loop)
        res = _aio_batch.Resolver(loop, node)
        got: list = []
        done_early = [_Fut(ReplyFuture()) for _ in range(3)]
        for i, f in enumerate(done_early):
            f.source.set_result(i)
            res.add(f, got.append, None, [got.append, True])
        assert got == []  # never inside add (asyncio's futures never call back synchronously either)
        await asyncio.sleep(0)
        assert got == done_early  # all three in the loop's next turn, in order

        later = [_Fut(ReplyFuture()) for _ in range(50)]
        for f in later:
            res.add(f, got.append, None, [got.append, True])
        await asyncio.sleep(0)  # checked: not done, each waits on its transport future
        assert got == done_early

        def io_turn():  # one turn of the I/O thread completes all 50 replies
            node.io = threading.get_ident()
            for i, f in enumerate(later):
                f.source.set_result(i)

        t = threading.Thread(target=io_turn)
        t.start()
        t.join()
        assert wakes == [] and len(node.at_turn_end) == 1  # no wake-up during the turn: one at its end
        fn, args = node.at_turn_end.pop()
        fn(*args)
        assert len(wakes) == 1
        while len(got) < 53:
            await asyncio.sleep(0)
        assert got == done_early + later and len(wakes) == 1

    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_removed_callback_is_not_called_and_a_failing_one_goes_to_the_exception_handler():
    async def main():
        loop = asyncio.get_running_loop()
        errors: list = []
        loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx["exception"]))
        res = _aio_batch.Resolver(loop, None)
        got: list = []
        futs = [_Fut(ReplyFuture()) for _ in range(3)]
        for f in futs:
            f.source.set_result(1)

        def boom(_f):
            raise RuntimeError("callback failed")

        removed = [got.append, True]
        res.add(futs[0], boom, None, [boom, True])
        res.add(futs[1], got.append, None, removed)
        res.add(futs[2], got.append, None, [got.append, True])
        removed[1] = False  # what remove_done_callback does
        await asyncio.sleep(0)
        assert got == [futs[2]]
        assert [str(e) for e in errors] == ["callback failed"]

    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_loops_resolver_does_not_keep_the_loop_alive():
    loop = asyncio.new_event_loop()
    res = _aio_batch.resolver(loop)
    assert _aio_batch.resolver(loop) is res
    ref = weakref.ref(loop)
    loop.close()
    del loop
    gc.collect()
    assert ref() is None
    _aio_batch.resolver(asyncio.new_event_loop()).loop().close()  # (the module's last one moves on)


def test_a_gather_of_plain_calls_keeps_order_and_values_and_never_takes_the_general_path(server, monkeypatch):
    book = Book(to_dist=_on(server))
    general: list = []
    plain = proxy_mod._refuse_awaitables
    monkeypatch.setattr(proxy_mod, "_refuse_awaitables", lambda *a: (general.append(a[1]), plain(*a))[1])
    via_io: list = []  # behind the burst: the threaded async lane's send (aiolane), _via_io with lean off
    plain_io = _aio_fast._lane_send
    monkeypatch.setattr(_aio_fast, "_lane_send", lambda *a: (via_io.append(1), plain_io(*a))[1])
    n = 3000

    async def main():
        values = await asyncio.gather(*(book.note.remote(i) for i in range(n)))
        assert book.note(n) == n  # a sync call from the loop's thread: behind them all
        return values

    assert asyncio.run(asyncio.wait_for(main(), 120)) == list(range(n))
    assert general == []  # every call took the await fast lane: the lane, or behind its burst
    assert via_io  # the lane handed a burst to the I/O thread: the calls behind it followed it there
    assert book.log() == list(range(n + 1))


def test_gathered_errors_keep_their_type_with_and_without_return_exceptions(server):
    book = Book(to_dist=_on(server))

    async def main():
        out = await asyncio.gather(*(book.fail.remote(i) if i % 50 == 7 else book.note.remote(i)
                                     for i in range(400)), return_exceptions=True)
        for i, v in enumerate(out):
            if i % 50 == 7:
                assert isinstance(v, ValueError) and isinstance(v, mesh.RemoteError) and f"bad {i}" in str(v)
            else:
                assert v == i
        with pytest.raises(ValueError, match="bad 3"):
            await asyncio.gather(*(book.note.remote(i) for i in range(200)), book.fail.remote(3))

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_plain_reply_read_by_the_resolver_is_what_result_reads(server):
    book = Book(to_dist=_on(server))

    async def main():
        futs = [book.note.remote(v) for v in (1, "two", None, 2.5, b"raw", {"k": [1, 2]}, (3, 4))]
        await asyncio.gather(*futs)  # (a tuple is an ext value: the codec decodes it)
        return futs

    futs = asyncio.run(asyncio.wait_for(main(), 30))
    assert [f.result() for f in futs] == [1, "two", None, 2.5, b"raw", {"k": [1, 2]}, (3, 4)]
    # the plain ones are kept as their body only; the tuple's reply stays for the codec
    assert [type(f.__dict__["_mesh_call"]) is Replied for f in futs] == [True] * 6 + [False]
