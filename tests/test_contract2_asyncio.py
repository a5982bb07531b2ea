"""Acceptance tests (second pass) of API.md "asyncio" and issue 12's "What must work" / "Bad input".

Only public names are used, as a user reading API.md would.
"""

from __future__ import annotations

import asyncio
import inspect
import threading

import pytest

import mesh

GATE = threading.Event()
SEEN: list = []


class Node(metaclass=mesh.RpcMeta):
    def __init__(self, tag="n"):
        self.tag = tag

    def double(self, x, *, plus=0):
        return 2 * x + plus

    async def adouble(self, x):
        await asyncio.sleep(0)
        return 2 * x

    @mesh.async_func
    def gated(self, v):
        assert GATE.wait(20)
        return v

    @mesh.async_func
    def fail(self):
        raise KeyError("missing")

    async def afail(self):
        await asyncio.sleep(0)
        raise ValueError("async failed")

    async def ping_back(self, other, me):
        # A -> B -> A for coroutines: B calls back into this same object (``me`` is A's proxy).
        return await other.call_back.remote(me)

    async def call_back(self, origin):
        return await origin.adouble.remote(21)

    async def await_future(self, fut):
        # awaiting a mesh future inside a coroutine frees the server's loop
        return await fut


class Conversational(mesh.AgentBase):
    """An AgentScope 1.0-style agent: async reply and async observe."""

    async def observe(self, x):
        await asyncio.sleep(0)
        if x is not None:
            self.memory.append(x)

    async def reply(self, x=None):
        await self.observe(x)
        return mesh.Msg(self.name, f"{self.name} heard {len(self.memory)}")


class MyError(Exception):
    pass


class Raiser(metaclass=mesh.RpcMeta):
    def boom(self):
        raise MyError("custom")


def on(srv):
    return {"host": srv.host, "port": srv.port}


@pytest.fixture(autouse=True)
def _reset():
    GATE.clear()
    SEEN.clear()
    yield
    GATE.set()


def test_awaiting_from_a_different_event_loop_works(server):
    n = Node(to_dist=on(server))
    f = n.adouble.remote(4)  # made outside any loop
    assert asyncio.run(asyncio.wait_for(_await(f), 10)) == 8
    # made in one loop, awaited in another (and again: the value stays readable)
    holder = {}

    async def make():
        holder["f"] = n.adouble(5)

    asyncio.run(make())
    assert asyncio.run(asyncio.wait_for(_await(holder["f"]), 10)) == 10
    assert asyncio.run(asyncio.wait_for(_await(holder["f"]), 10)) == 10

    # awaited from a loop running in another thread
    out = []
    t = threading.Thread(target=lambda: out.append(asyncio.run(_await(n.adouble(6)))))
    t.start()
    t.join(20)
    assert out == [12]


async def _await(f):
    return await f


def test_asyncio_gather_wait_as_completed_on_futures_directly(server):
    n = Node(to_dist=on(server))
    a = Conversational("a", to_dist=on(server))

    async def main():
        got = await asyncio.wait_for(
            asyncio.gather(n.adouble(1), n.double.remote(2), a(mesh.Msg("u", "x"))), 10
        )
        assert got[0] == 2 and got[1] == 4
        assert isinstance(got[2], mesh.Msg) and got[2].content.startswith("a heard")
        done, pending = await asyncio.wait([n.adouble(3), n.adouble(4)], timeout=10)
        assert not pending and sorted(t.result() for t in done) == [6, 8]
        vals = []
        for c in asyncio.as_completed([n.adouble(5), n.adouble(6)], timeout=10):
            vals.append(await c)
        assert sorted(vals) == [10, 12]

    asyncio.run(main())


def test_await_raises_exactly_what_result_would(server):
    n = Node(to_dist=on(server))

    async def main():
        with pytest.raises(mesh.RemoteError) as ei:
            await n.afail()
        assert isinstance(ei.value, ValueError) and ei.value.remote_type
        with pytest.raises(KeyError):
            await n.fail()
        f = n.gated(1)
        assert f.cancel() in (True, False)
        with pytest.raises(mesh.Cancelled):
            await f
        GATE.set()  # a running sync method is only cooperatively cancelled: free the actor

    asyncio.run(asyncio.wait_for(main(), 20))
    with pytest.raises(KeyError):
        n.fail().result(timeout=10)


def test_remote_on_every_method_kinds_and_kwargs(server):
    n = Node(to_dist=on(server))
    r = n.double.remote(3, plus=1)
    assert isinstance(r, mesh.AsyncResult)
    assert r.result(timeout=10) == 7
    assert isinstance(n.adouble.remote(2), mesh.AsyncResult)
    assert n.adouble.remote(2).result(timeout=10) == 4
    g = n.gated.remote(9)
    assert isinstance(g, mesh.AsyncResult) and not g.done()
    GATE.set()
    assert g.result(timeout=10) == 9


def test_coroutine_reentrancy_a_b_a(server):
    a = Node("a", to_dist=on(server))
    b = Node("b", to_dist=on(server))

    async def main():
        return await asyncio.wait_for(_await(a.ping_back(b, a)), 15)

    assert asyncio.run(main()) == 42


def test_coroutine_awaiting_a_mesh_future_frees_the_loop():
    srv = mesh.AgentServer(port=0, capacity=1, advertise=False).launch(in_subprocess=False)
    try:
        producer = Node("p", to_dist=on(srv))
        waiter = Node("w", to_dist=on(srv))
        other = Node("o", to_dist=on(srv))
        fut = producer.gated(5)
        w = waiter.await_future(fut)
        # while w's coroutine awaits the gated future, another object's coroutine runs
        assert other.adouble(7).result(timeout=10) == 14
        assert not w.done()
        GATE.set()
        assert w.result(timeout=10) == 5
    finally:
        GATE.set()
        srv.shutdown()


def test_agentscope_style_async_agents_local_and_distributed(server):
    async def conversation(alice, bob):
        msg = mesh.Msg("user", "hi")
        for _ in range(2):
            msg = await alice(msg)
            msg = await bob(msg)
        return msg

    local = asyncio.run(conversation(Conversational("alice"), Conversational("bob")))
    remote = asyncio.run(
        asyncio.wait_for(
            conversation(Conversational("alice").to_dist(**on(server)), Conversational("bob", to_dist=on(server))),
            20,
        )
    )
    assert local.content == remote.content == "bob heard 2"
    assert isinstance(remote, mesh.Msg)


def test_local_async_methods_are_plain_coroutine_functions():
    n = Node()
    assert inspect.iscoroutinefunction(n.adouble)
    assert inspect.iscoroutinefunction(Conversational("x").reply)
    c = n.adouble(2)
    assert inspect.iscoroutine(c)
    assert asyncio.run(c) == 4


def test_awaitable_passed_as_a_value_is_a_clear_mesh_error(server):
    n = Node(to_dist=on(server))
    coro = Node().adouble(1)  # a local coroutine object, not a value
    try:
        with pytest.raises(mesh.MeshError) as ei:
            n.double(coro)
        assert "double" in str(ei.value)
    finally:
        coro.close()


def test_remote_custom_exception_importable_keeps_its_class(server):
    r = Raiser(to_dist=on(server))
    with pytest.raises(MyError) as ei:
        r.boom()
    assert isinstance(ei.value, mesh.RemoteError)
    assert "custom" in str(ei.value)


def test_traceback_of_class_sent_by_value_names_the_real_file():
    def make():
        class ByValue(metaclass=mesh.RpcMeta):
            def explode(self):
                raise RuntimeError("by value")

        return ByValue

    import sys

    srv = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=True)
    try:
        cls = make()
        obj = cls(to_dist=on(srv))
        with pytest.raises(mesh.RemoteError) as ei:
            obj.explode()
        tb = ei.value.remote_traceback
        assert "by value" in tb
        assert __file__ in tb or "test_contract2_asyncio.py" in tb, tb
        assert "<dynamic-code>" not in tb
    finally:
        srv.shutdown()
    assert sys.modules[__name__]


def test_mesh_wait_num_returns_and_timeout_from_threads(server):
    n = Node(to_dist=on(server))
    quick = [n.adouble.remote(i) for i in range(3)]
    slow = Node("s", to_dist=on(server)).gated(0)
    done, pending = mesh.wait(quick + [slow], num_returns=3, timeout=10)
    assert isinstance(done, list) and isinstance(pending, list)
    assert len(done) >= 3 and slow in pending
    done, pending = mesh.wait([slow], timeout=0.2)
    assert done == [] and pending == [slow]
    results = []

    def in_thread():
        d, p = mesh.wait([slow], num_returns=1, timeout=15)
        results.append((len(d), len(p)))

    t = threading.Thread(target=in_thread)
    t.start()
    GATE.set()
    t.join(20)
    assert results == [(1, 0)]
    seen = [f.result() for f in mesh.as_completed(quick + [slow], timeout=10)]
    assert sorted(seen) == [0, 0, 2, 4]
