"""Coroutine methods on the server (issue 12, server half): ``async def`` is an async function,
coroutines run on the server's event loop with actor semantics, the call chain follows them,
a blocked loop is logged, bad awaitables are named, shutdown cancels, status counts them."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
import time

import pytest

import mesh
from mesh import AgentBase, Msg, RpcMeta, async_func, sync_func
from mesh._core.methods import ASYNC, ASYNC_MSG, SYNC, method_table

from conftest import run_cli, wait_until


class Napper(metaclass=RpcMeta):
    def __init__(self) -> None:
        self.log: list[int] = []
        self.active = 0
        self.overlap = 0  # calls seen running at the same time on this object

    async def nap(self, seconds: float, n: int = 0) -> int:
        self.active += 1
        self.overlap = max(self.overlap, self.active)
        try:
            await asyncio.sleep(seconds)
            self.log.append(n)
            return n
        finally:
            self.active -= 1

    @async_func
    def add(self, n: int) -> int:
        self.active += 1
        self.overlap = max(self.overlap, self.active)
        self.log.append(n)
        self.active -= 1
        return n

    def history(self) -> tuple[list[int], int]:
        return self.log, self.overlap

    async def where(self) -> str:
        return threading.current_thread().name

    def where_sync(self) -> str:
        return threading.current_thread().name

    @sync_func
    async def doubled(self, x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    @staticmethod
    async def static_double(x: int) -> int:
        return 2 * x

    async def gathered(self, n: int) -> list[int]:
        async def one(i: int) -> int:
            await asyncio.sleep(0.01)
            return i

        return list(await asyncio.gather(*(one(i) for i in range(n))))

    async def hog(self, seconds: float) -> str:
        time.sleep(seconds)  # blocks the loop: the server logs it
        return "done"


class Bad(metaclass=RpcMeta):
    async def _helper(self) -> int:
        return 1

    def lazy(self):
        return self._helper()  # not awaited: a coroutine object where a value is needed

    async def nested(self):
        return self._helper()  # a coroutine method returning a coroutine

    async def stream(self):
        yield 1


class Ping(metaclass=RpcMeta):
    """A→B→A with A's method a coroutine: A waits on B (in a thread), B calls back into A."""

    def ping(self) -> str:
        return "pong"

    async def aping(self) -> str:
        await asyncio.sleep(0)
        return "apong"

    async def ask(self, peer, me, back: str) -> str:
        got = await asyncio.to_thread(peer.back, me, back)
        return f"A<{got}>"

    def back(self, me, back: str) -> str:
        return f"B<{getattr(me, back)()}>"


class AsyncAgent(AgentBase):
    async def reply(self, x: Msg | None = None) -> Msg:
        await asyncio.sleep(0)
        return Msg(self.name, x.content + 1)


# ------------------------------------------------------------------ method table
def test_async_def_is_an_async_function_in_the_method_table():
    table = method_table(Napper)
    assert table["nap"] == ASYNC and table["where"] == ASYNC and table["static_double"] == ASYNC
    assert table["doubled"] == SYNC  # explicitly @sync_func: the caller waits
    assert table["where_sync"] == SYNC and table["add"] == ASYNC
    assert method_table(Bad)["stream"] == SYNC  # an async generator is not a coroutine function
    agent = method_table(AsyncAgent)
    assert agent["reply"] == ASYNC_MSG and agent["__call__"] == ASYNC_MSG

    class Sub(Napper):
        async def where_sync(self) -> str:  # an async override of a sync method is async
            return "sub"

    assert method_table(Sub)["where_sync"] == ASYNC


def test_local_objects_stay_plain_python():
    n = Napper()
    coro = n.nap(0, 7)
    assert asyncio.iscoroutine(coro)
    assert asyncio.run(coro) == 7
    assert asyncio.run(AsyncAgent("a")(Msg("u", 1))).content == 2


# ------------------------------------------------------------------ the loop
def test_coroutines_of_different_objects_interleave_beyond_capacity(spawn_server):
    srv = spawn_server(port=0, capacity=2)
    objs = [Napper(to_dist={"host": "127.0.0.1", "port": srv.port}) for _ in range(200)]
    t0 = time.monotonic()
    futs = [o.nap(0.5, i) for i, o in enumerate(objs)]
    assert [f.result(timeout=30) for f in futs] == list(range(200))
    took = time.monotonic() - t0
    # one after another on 2 workers would be 50 s; interleaved on the loop, about 0.5 s
    assert took < 5.0, took


def test_one_object_runs_its_calls_one_at_a_time_in_arrival_order_sync_and_async(spawn_server):
    srv = spawn_server(port=0, capacity=4)
    n = Napper(to_dist={"host": "127.0.0.1", "port": srv.port})
    futs = []
    for i in range(12):
        futs.append(n.nap(0.02, i) if i % 2 == 0 else n.add(i))
    assert [f.result(timeout=20) for f in futs] == list(range(12))
    log, overlap = n.history()
    assert log == list(range(12)) and overlap == 1


def test_coroutines_run_on_the_loop_and_sync_methods_on_workers(spawn_server):
    srv = spawn_server(port=0, capacity=2)
    n = Napper(to_dist={"host": "127.0.0.1", "port": srv.port})
    on_loop = n.where().result(timeout=10)
    assert on_loop == "mesh-io"  # the server's loop runs on its I/O thread (transport._hosted)
    assert n.where_sync() not in (on_loop, "") and "-aio" not in n.where_sync()  # a worker
    assert n.doubled(21) == 42  # @sync_func async def: the caller waits, the loop runs it
    assert n.static_double(4).result(timeout=10) == 8
    assert n.gathered(5).result(timeout=10) == [0, 1, 2, 3, 4]  # tasks it makes run in its context
    agent = AsyncAgent("a", to_dist={"host": "127.0.0.1", "port": srv.port})
    assert agent(Msg("u", 1)).content == 2  # AgentBase.__call__ forwarding to an async reply
    assert agent.reply(Msg("u", 5)).content == 6


def test_a_coroutine_holds_no_worker_status_counts_it_and_shutdown_cancels_it(spawn_server):
    srv = spawn_server(port=0, capacity=1, grace=0.3)
    where = {"host": "127.0.0.1", "port": srv.port}
    sleeper, other = Napper(to_dist=where), Napper(to_dist=where)
    fut = sleeper.nap(60)
    assert other.where_sync()  # the only worker is free: the coroutine is on the loop
    status = lambda: json.loads(run_cli("status", f"127.0.0.1:{srv.port}", "--json").stdout)  # noqa: E731
    assert wait_until(lambda: status()["aio_running"] == 1, timeout=20)
    assert not fut.done()
    srv.shutdown()
    with pytest.raises(mesh.ServerUnavailable):
        fut.result(timeout=20)


def test_reentrancy_by_call_chain_when_a_coroutine_waits_in_a_thread(spawn_server):
    srv1, srv2 = spawn_server(port=0, capacity=1), spawn_server(port=0, capacity=1)
    a = Ping(to_dist={"host": "127.0.0.1", "port": srv1.port})
    b = Ping(to_dist={"host": "127.0.0.1", "port": srv2.port})
    # A.ask (a coroutine) waits on B in a thread; B calls back into A on the same chain
    assert a.ask(b, a, "ping").result(timeout=20) == "A<B<pong>>"
    assert a.ask(b, a, "aping").result(timeout=20) == "A<B<apong>>"


def test_a_coroutine_that_blocks_the_loop_is_logged_with_class_and_method(caplog):
    srv = mesh.AgentServer(port=0, capacity=2, advertise=False).launch(in_subprocess=False)
    try:
        n = Napper(to_dist={"host": "127.0.0.1", "port": srv.port})
        with caplog.at_level(logging.WARNING, logger="mesh.server"):
            assert n.hog(0.5).result(timeout=10) == "done"
            assert n.nap(0).result(timeout=10) == 0  # a short step: not logged
            wait_until(lambda: any("Napper.hog blocked the server's event loop" in r.getMessage() for r in caplog.records))
        lines = [r.getMessage() for r in caplog.records if "event loop" in r.getMessage()]
        assert len(lines) == 1 and "for 0.5" in lines[0], lines
    finally:
        srv.shutdown()


# ------------------------------------------------------------------ bad input
def test_awaitables_where_a_value_is_needed_are_named(spawn_server):
    srv = spawn_server(port=0, capacity=2)
    bad = Bad(to_dist={"host": "127.0.0.1", "port": srv.port})
    with pytest.raises(mesh.RemoteError, match=r"Bad\.lazy returned a coroutine: define it with async def, or await it"):
        bad.lazy()
    with pytest.raises(mesh.RemoteError, match=r"Bad\.nested returned a coroutine"):
        bad.nested().result(timeout=10)
    with pytest.raises(mesh.RemoteError, match=r"Bad\.stream is an async generator: async generator methods need @mesh\.stream_func"):
        bad.stream()
    assert bad.lazy is not None  # the object is still there and serves


def test_a_server_without_coroutine_calls_never_imports_asyncio():
    code = (
        "import sys, mesh\n"
        "srv = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=False)\n"
        "srv.shutdown()\n"
        "print('asyncio' in sys.modules)\n"
    )
    env = {**os.environ, "MESH_DISCOVERY": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
