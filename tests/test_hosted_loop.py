"""The server's event loop run by its I/O thread (``transport._hosted``, ``mesh.server._hosting``).

A coroutine call is read, run and answered by one thread; what that thread must never do is hold
the sockets: a step that blocks its thread (a sync ``time.sleep``, a sync mesh call inside an
``async def``) hands the I/O loop to another thread, and the loop's thread takes it back at its
next select. Each test would hang (and fail on its deadline) if the server stopped reading.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

from mesh import RpcMeta

from conftest import wait_until


def _owns_io() -> bool:
    from mesh._core import runtime

    rt = runtime.current(create=False)
    return rt is not None and rt.node.io_ident == threading.get_ident()


class Looper(metaclass=RpcMeta):
    async def owns_io(self) -> bool:
        """True if this coroutine runs on the thread that owns the server's I/O loop now."""
        return _owns_io()

    async def block_until(self, path: str, limit: float) -> bool:
        """Hold the loop's thread (no await) until ``path`` exists: only another thread can make it."""
        with open(path + ".started", "w"):
            pass
        end = time.monotonic() + limit
        while not os.path.exists(path):
            if time.monotonic() > end:
                return False
            time.sleep(0.005)  # a blocking step, on purpose
        return True

    async def relay(self, peer, x: int) -> int:
        """A sync mesh call from inside an ``async def`` (it blocks the loop's thread)."""
        return peer.echo(x)

    async def gather_naps(self, n: int) -> list[int]:
        async def one(i: int) -> int:
            await asyncio.sleep(0.01)
            return i

        return list(await asyncio.gather(*(one(i) for i in range(n))))

    def touch(self, path: str) -> bool:
        with open(path, "w"):
            pass
        return True

    def echo(self, x: int) -> int:
        return x

    def call_back(self, peer, x: int) -> int:
        return peer.echo(x)  # peer is the coroutine's object: the chain re-enters it


class Reentrant(metaclass=RpcMeta):
    def __init__(self) -> None:
        self.me = None

    def set_me(self, me) -> None:
        self.me = me

    async def round_trip(self, peer, x: int) -> int:
        return peer.call_back(self.me, x)  # sync: blocks the loop's thread; peer calls back into us

    def echo(self, x: int) -> int:
        return x


class Mixed(metaclass=RpcMeta):
    async def nap(self, i: int) -> int:
        await asyncio.sleep(0.005)
        return i

    async def hold(self, i: int) -> int:
        time.sleep(0.03)  # longer than the watchdog's stall: the I/O loop moves, then comes back
        return i

    async def relay(self, peer, i: int) -> int:
        return peer.echo(i)  # a blocking mesh wait in a step: handed off first

    def echo(self, i: int) -> int:
        return i

    async def owns_io(self) -> bool:
        return _owns_io()


def test_hand_offs_and_give_backs_under_a_mixed_load_lose_nothing(spawn_server):
    srv = spawn_server(port=0, capacity=4)
    where = {"host": "127.0.0.1", "port": srv.port}
    objs = [Mixed(to_dist=where) for _ in range(8)]
    peer = Mixed(to_dist=where)
    futs, want = [], []
    for round_ in range(6):
        for k, obj in enumerate(objs):
            i = round_ * 100 + k
            kind = (round_ + k) % 4
            if kind == 0:
                futs.append(obj.nap(i))
            elif kind == 1:
                futs.append(obj.hold(i))
            elif kind == 2:
                futs.append(obj.relay(peer, i))
            else:
                futs.append(obj.echo.remote(i))
            want.append(i)
    assert [f.result(timeout=60) for f in futs] == want
    assert wait_until(lambda: objs[0].owns_io().result(timeout=20), timeout=20)  # the loop has the I/O back


def test_coroutines_run_on_the_io_thread(spawn_server):
    srv = spawn_server(port=0)
    obj = Looper(to_dist={"host": "127.0.0.1", "port": srv.port})
    assert obj.owns_io().result(timeout=20) is True
    assert obj.gather_naps(20).result(timeout=20) == list(range(20))


def test_a_blocking_step_hands_the_io_loop_off_and_gets_it_back(spawn_server, tmp_path):
    srv = spawn_server(port=0, capacity=2)
    where = {"host": "127.0.0.1", "port": srv.port}
    blocker, other = Looper(to_dist=where), Looper(to_dist=where)
    assert blocker.owns_io().result(timeout=20)
    flag = str(tmp_path / "flag")
    held = blocker.block_until(flag, 60)
    assert wait_until(lambda: os.path.exists(flag + ".started"), timeout=30)  # the step holds the thread now
    # the server still reads requests while the step holds the loop's thread: the touch gets in
    assert other.touch.remote(flag).result(timeout=30) is True
    assert held.result(timeout=30) is True
    # and the loop's thread owns the I/O loop again once it is back in its select
    assert wait_until(lambda: blocker.owns_io().result(timeout=20), timeout=20)


def test_a_sync_mesh_call_inside_async_def_does_not_hold_the_server(spawn_server):
    srv = spawn_server(port=0, capacity=2)
    where = {"host": "127.0.0.1", "port": srv.port}
    a, b = Looper(to_dist=where), Looper(to_dist=where)
    for i in range(5):  # the reply to a's call to b must be read while a's step blocks
        assert a.relay(b, i).result(timeout=30) == i
    assert wait_until(lambda: a.owns_io().result(timeout=20), timeout=20)


def test_a_chain_re_enters_a_coroutine_blocked_in_a_sync_call(spawn_server):
    srv = spawn_server(port=0, capacity=1)
    where = {"host": "127.0.0.1", "port": srv.port}
    a, b = Reentrant(to_dist=where), Looper(to_dist=where)
    a.set_me(a)
    assert a.round_trip(b, 7).result(timeout=30) == 7  # a -> b -> a.echo, while a waits in a step


def test_many_hosted_calls_keep_their_order_and_values(spawn_server):
    srv = spawn_server(port=0)
    obj = Looper(to_dist={"host": "127.0.0.1", "port": srv.port})

    async def main() -> list[int]:
        return list(await asyncio.gather(*(obj.echo.remote(i) for i in range(300)),
                                         *(obj.gather_naps(3) for _ in range(20))))

    got = asyncio.run(main())
    assert got[:300] == list(range(300)) and got[300:] == [[0, 1, 2]] * 20


def test_the_loop_can_have_a_thread_of_its_own(spawn_server, monkeypatch):
    monkeypatch.setenv("MESH_HOSTED_LOOP", "0")  # inherited by the server's process
    srv = spawn_server(port=0)
    obj = Looper(to_dist={"host": "127.0.0.1", "port": srv.port})
    assert obj.owns_io().result(timeout=20) is False
    assert obj.gather_naps(5).result(timeout=20) == list(range(5))


def test_only_a_thread_blocking_wait_on_the_io_thread_hands_off():
    from mesh._core import context
    from mesh.server._hosting import before_blocking

    handed: list[int] = []

    class Watchdog:
        lock = threading.Lock()
        current = (1, 0)

    class Aio:
        hosted = True

    class Runner:
        aio = Aio()
        watchdog = Watchdog()
        io_ident = threading.get_ident()

        def _hand_off(self, ident: int) -> bool:
            handed.append(ident)
            return True

    runner = Runner()
    context.set_context("chain", lambda: before_blocking(runner), lambda: None)
    try:
        with context.blocking(awaited=True):  # an await frees the thread: nothing to hand off
            pass
        assert handed == []
        with context.blocking():  # a blocking wait on the thread that owns the I/O loop
            pass
        assert handed == [threading.get_ident()] and runner.watchdog.current is None
        runner.io_ident = -1  # another thread owns it (handed off already): nothing to do
        with context.blocking():
            pass
        assert handed == [threading.get_ident()]
        Aio.hosted = False  # the loop has its own thread
        runner.io_ident = threading.get_ident()
        with context.blocking():
            pass
        assert len(handed) == 1
    finally:
        context.set_context(None, None, None)
