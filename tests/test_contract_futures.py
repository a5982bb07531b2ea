"""Acceptance tests of API.md: futures (AsyncResult, Placeholder), passing them on, asyncio, wait/as_completed."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import mesh

RELEASE = threading.Event()
LOCK = threading.Lock()
STATE: dict = {}


class Prod(metaclass=mesh.RpcMeta):
    @mesh.async_func
    def value(self, v):
        return v

    @mesh.async_func
    def gated(self, v):
        assert RELEASE.wait(20)
        return v

    @mesh.async_func
    def fail(self):
        raise ValueError("prod failed")

    def sync_double(self, x):
        return x * 2

    @mesh.async_func
    def obj(self):
        return mesh.Msg("n", "c", color="red")


class Cons(metaclass=mesh.RpcMeta):
    def consume(self, x):
        STATE["consumed_at"] = time.monotonic()
        return x + 1

    @mesh.async_func
    def consume_async(self, x):
        return x + 1

    def length(self, xs):
        return len(xs)


class Talker(mesh.AgentBase):
    def reply(self, x):
        return mesh.Msg(self.name, f"{self.name} got {x.content}" if x is not None else "none")


class Slowtalker(mesh.AgentBase):
    def reply(self, x):
        assert RELEASE.wait(20)
        return mesh.Msg(self.name, "late", role="user")


def on(srv):
    return {"host": srv.host, "port": srv.port}


@pytest.fixture(autouse=True)
def _reset():
    RELEASE.clear()
    STATE.clear()
    yield
    RELEASE.set()


def test_async_result_result_and_done(server):
    p = Prod(to_dist=on(server))
    f = p.gated(5)
    assert isinstance(f, mesh.AsyncResult)
    assert not f.done()
    RELEASE.set()
    assert f.result(timeout=10) == 5
    assert f.done()
    assert f.result() == 5


def test_async_result_composites(server):
    p = Prod(to_dist=on(server))
    d = p.value({"a": 1, "b": [1, 2]})
    assert d["a"] == 1
    assert "b" in d
    assert len(d) == 2
    assert sorted(iter(d)) == ["a", "b"]
    lst = p.value([3, 4, 5])
    assert list(lst) == [3, 4, 5] and len(lst) == 3 and 4 in lst and lst[2] == 5
    o = p.obj()
    assert o.content == "c" and o.color == "red"


def test_placeholder_is_msg_and_blocks_until_it_exists(server):
    t = Slowtalker("s", to_dist=on(server))
    ph = t(mesh.Msg("u", "x"))
    assert isinstance(ph, mesh.Placeholder) and isinstance(ph, mesh.Msg)
    got = []
    th = threading.Thread(target=lambda: got.append(ph.content))
    th.start()
    time.sleep(0.2)
    assert not got  # reading a field blocks until the message exists
    RELEASE.set()
    th.join(10)
    assert got == ["late"]
    m = ph.result(timeout=10)
    assert isinstance(m, mesh.Msg) and m.content == "late" and m.role == "user" and m.name == "s"
    assert ph.role == "user"


def test_future_passed_on_never_waits(server, spawn_server):
    other = spawn_server(port=0)
    p = Prod(to_dist=on(server))
    c = Cons(to_dist=on(other))
    f = p.gated(41)
    t0 = time.monotonic()
    out = c.consume_async(f)  # goes out at once, the consumer waits
    assert time.monotonic() - t0 < 2
    assert not out.done()
    RELEASE.set()
    assert out.result(timeout=10) == 42


def test_future_passed_to_sync_call_goes_out_at_once(server):
    # the sync call blocks, but the call itself is issued before the producer finishes
    p = Prod(to_dist=on(server))
    c = Cons(to_dist=on(server))
    f = p.gated(1)
    res = []
    th = threading.Thread(target=lambda: res.append(c.consume(f)))
    th.start()
    time.sleep(0.3)
    assert not res
    RELEASE.set()
    th.join(10)
    assert res == [2]


def test_placeholder_passed_between_agents(server, spawn_server):
    other = spawn_server(port=0)
    a = Talker("a", to_dist=on(server))
    b = Talker("b", to_dist=on(other))
    x = a(mesh.Msg("u", "hi"))
    y = b(x)
    assert y.content == "b got a got hi"


def test_failed_producer_gives_remote_error_for_the_consumer(server):
    p = Prod(to_dist=on(server))
    c = Cons(to_dist=on(server))
    f = p.fail()
    with pytest.raises(mesh.RemoteError):
        f.result(timeout=10)
    with pytest.raises(mesh.RemoteError):
        c.consume(f)


# ---------------------------------------------------------------- asyncio

def test_await_futures_never_blocks_the_loop(server):
    p = Prod(to_dist=on(server))
    a = Talker("t", to_dist=on(server))

    async def main():
        ticks = 0
        stop = False

        async def ticker():
            nonlocal ticks
            while not stop:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.get_running_loop().create_task(ticker())
        f = p.gated(3)
        asyncio.get_running_loop().call_later(0.5, RELEASE.set)
        before = ticks
        v = await f
        assert ticks - before >= 5  # the loop kept running while it waited
        ph = a(mesh.Msg("u", "q"))
        m = await ph
        assert isinstance(m, mesh.Msg) and m.content == "t got q"
        with pytest.raises(ValueError):
            await p.fail()
        stop = True
        await task
        return v

    assert asyncio.run(main()) == 3


class AsyncThing(metaclass=mesh.RpcMeta):
    def __init__(self):
        self.log = []

    async def work(self, x, delay=0.0):
        self.log.append(("start", x))
        await asyncio.sleep(delay)
        self.log.append(("end", x))
        return x * 10

    def sync_get_log(self):
        return self.log


class AsyncAgent(mesh.AgentBase):
    async def reply(self, x):
        await asyncio.sleep(0.01)
        return mesh.Msg(self.name, f"async {x.content}")


def test_async_def_method_is_async_func_on_proxy_and_coroutine_locally(server):
    local = AsyncThing()
    import inspect

    assert inspect.iscoroutinefunction(local.work)
    assert asyncio.run(local.work(2)) == 20
    remote = AsyncThing(to_dist=on(server))
    f = remote.work(3)
    assert isinstance(f, mesh.AsyncResult)
    assert f.result(timeout=10) == 30


def test_async_reply_agent_local_and_remote(server):
    local = AsyncAgent("l")
    remote = AsyncAgent("r", to_dist=on(server))

    async def main():
        a = await local(mesh.Msg("u", "1"))
        b = await remote(mesh.Msg("u", "2"))
        return a, b

    a, b = asyncio.run(main())
    assert a.content == "async 1" and b.content == "async 2"
    ph = remote(mesh.Msg("u", "3"))
    assert isinstance(ph, mesh.Placeholder)
    assert ph.content == "async 3"
    assert isinstance(remote.reply(mesh.Msg("u", "4")), mesh.Placeholder)


def test_async_methods_keep_actor_semantics(server):
    t = AsyncThing(to_dist=on(server))
    futs = [t.work(i, 0.02) for i in range(10)]
    assert [f.result(timeout=20) for f in futs] == [i * 10 for i in range(10)]
    log = t.sync_get_log()
    expected = []
    for i in range(10):
        expected += [("start", i), ("end", i)]
    assert [tuple(e) for e in log] == expected


ARRIVED = [0]


class Meeter(metaclass=mesh.RpcMeta):
    async def meet(self, n):
        with LOCK:
            ARRIVED[0] += 1
        deadline = time.monotonic() + 10
        while ARRIVED[0] < n:  # only returns once all n coroutines run at once
            if time.monotonic() > deadline:
                raise RuntimeError("coroutines did not interleave")
            await asyncio.sleep(0.01)
        return True

    def blocking_sync(self):
        assert RELEASE.wait(20)
        return "sync done"


def test_coroutines_of_different_objects_interleave_beyond_capacity():
    ARRIVED[0] = 0
    srv = mesh.AgentServer(port=0, capacity=1, advertise=False).launch(in_subprocess=False)
    try:
        objs = [Meeter(to_dist=on(srv)) for _ in range(6)]
        futs = [o.meet(6) for o in objs]
        assert all(f.result(timeout=20) for f in futs)
    finally:
        srv.shutdown()


def test_sync_method_never_blocks_the_loop_and_coroutines_never_block_workers():
    ARRIVED[0] = 0
    srv = mesh.AgentServer(port=0, capacity=2, advertise=False).launch(in_subprocess=False)
    try:
        blocker = Meeter(to_dist=on(srv))
        stuck = blocker.blocking_sync.remote()  # holds a worker thread
        waiter = Meeter(to_dist=on(srv))
        pending = waiter.meet(2)  # a coroutine waiting on the loop
        other = Prod(to_dist=on(srv))
        assert other.sync_double(4) == 8  # a worker is still free: the coroutine holds none
        third = Meeter(to_dist=on(srv))
        assert third.meet(2).result(timeout=10) is True  # the loop runs despite the blocked sync method
        assert pending.result(timeout=10) is True
        RELEASE.set()
        assert stuck.result(timeout=10) == "sync done"
    finally:
        RELEASE.set()
        srv.shutdown()


def test_remote_on_every_forwarded_method(server):
    p = Prod(to_dist=on(server))
    f = p.sync_double.remote(21)
    assert isinstance(f, mesh.AsyncResult)
    assert f.result(timeout=10) == 42
    g = p.value.remote(3)
    assert isinstance(g, mesh.AsyncResult) and g.result(timeout=10) == 3

    async def main():
        return await p.sync_double.remote(5)

    assert asyncio.run(main()) == 10


def test_wait_and_as_completed(server):
    p = Prod(to_dist=on(server))
    t = Talker("w", to_dist=on(server))
    fast = p.value(1)
    slow = p.gated(2)
    ph = t(mesh.Msg("u", "z"))
    done, pending = mesh.wait([slow, fast, ph], num_returns=2, timeout=10)
    assert isinstance(done, list) and isinstance(pending, list)
    assert len(done) == 2 and pending == [slow]
    assert {id(x) for x in done} == {id(fast), id(ph)}
    done, pending = mesh.wait([slow], timeout=0.1)
    assert done == [] and pending == [slow]
    RELEASE.set()
    seen = list(mesh.as_completed([slow, fast, ph], timeout=10))
    assert len(seen) == 3 and {id(x) for x in seen} == {id(slow), id(fast), id(ph)}


def test_as_completed_timeout():
    srv = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=False)
    try:
        p = Prod(to_dist=on(srv))
        slow = p.gated(2)
        with pytest.raises(mesh.CallTimeout):
            list(mesh.as_completed([slow], timeout=0.2))
        RELEASE.set()
        assert slow.result(timeout=10) == 2
    finally:
        srv.shutdown()


def test_wait_signature_defaults():
    import inspect

    sig = inspect.signature(mesh.wait)
    assert sig.parameters["num_returns"].default == 1 and sig.parameters["timeout"].default is None
    assert inspect.signature(mesh.as_completed).parameters["timeout"].default is None


def test_many_calls_with_tiny_max_len_all_readable():
    # max_len / max_expire_time bound only results that no live future holds
    srv = mesh.AgentServer(port=0, advertise=False, max_len=5, max_expire_time=600).launch(in_subprocess=False)
    try:
        p = Prod(to_dist=on(srv))
        futs = [p.value(i) for i in range(2000)]
        assert [f.result(timeout=30) for f in futs] == list(range(2000))
    finally:
        srv.shutdown()


class MyErr(Exception):
    pass


class Raiser(metaclass=mesh.RpcMeta):
    def raise_value(self):
        raise ValueError("v")

    def raise_key(self):
        raise KeyError("k")

    def raise_mine(self):
        raise MyErr("mine")


def test_remote_exception_is_also_instance_of_its_class(server):
    r = Raiser(to_dist=on(server))
    with pytest.raises(ValueError) as info:
        r.raise_value()
    assert isinstance(info.value, mesh.RemoteError)
    with pytest.raises(KeyError):
        r.raise_key()
    with pytest.raises(MyErr) as info:
        r.raise_mine()
    assert isinstance(info.value, mesh.RemoteError)


def test_remote_exception_not_importable_is_plain_remote_error(tmp_path):
    (tmp_path / "contract_secret_errs.py").write_text(
        "import mesh\n"
        "class HiddenError(Exception):\n    pass\n"
        "class HiddenRaiser(metaclass=mesh.RpcMeta):\n"
        "    def go(self):\n        raise HiddenError('hidden')\n"
    )
    srv = mesh.AgentServer(port=0, advertise=False, agent_dir=str(tmp_path)).launch(in_subprocess=True)
    try:
        class HiddenRaiser(metaclass=mesh.RpcMeta):  # same name; the server uses its own (agent_dir)
            def go(self):
                import contract_secret_errs  # noqa: F401  (only on the server)

                raise contract_secret_errs.HiddenError("hidden")

        r = HiddenRaiser(to_dist=on(srv))
        with pytest.raises(mesh.RemoteError) as info:
            r.go()
        assert type(info.value) is mesh.RemoteError
        assert "HiddenError" in info.value.remote_type
    finally:
        srv.shutdown()



@pytest.mark.slow
@pytest.mark.timeout(240)
def test_100k_async_calls_then_read_all_with_default_settings():
    # API.md: "a loop that issues one async call per agent and then reads every result works with
    # default settings for 100,000 calls": the client slows its issuing instead of failing
    srv = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=True)
    try:
        agents = [Prod(to_dist=on(srv)) for _ in range(10)]
        n = 100_000
        futs = [agents[i % 10].value(i) for i in range(n)]
        assert all(f.result(timeout=120) == i for i, f in enumerate(futs))
    finally:
        srv.shutdown()
