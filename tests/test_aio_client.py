"""asyncio on the caller's side (issue 12, client half): awaitable futures, ``async def`` on a
proxy and on a local agent, ``.remote()``, ``mesh.wait`` / ``mesh.as_completed``, remote
exceptions that keep their type, awaitables refused as arguments, typing."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

import mesh
from mesh import AgentBase, Msg, RpcMeta, async_func



class Worker(metaclass=RpcMeta):
    def __init__(self) -> None:
        self.log: list[str] = []

    async def anap(self, seconds: float, n: int = 0) -> int:
        await asyncio.sleep(seconds)
        return n

    async def noop(self) -> None:
        return None

    def nap(self, seconds: float, n: int = 0) -> int:
        time.sleep(seconds)
        return n

    def echo(self, x):
        return x

    def record(self, x: str) -> list[str]:
        self.log.append(x)
        return list(self.log)

    @async_func
    def make(self, size: int) -> bytes:
        return b"p" * size

    @async_func
    def forward(self, fut):
        return fut  # a future as the result: the reader follows it

    def fail(self, kind: str, text: str):
        raise {"value": ValueError, "key": KeyError, "lookup": LookupError, "mine": MyError,
               "unicode": UnicodeDecodeError}[kind](text) if kind != "unicode" else UnicodeDecodeError("utf-8", b"\xff", 0, 1, text)

    async def afail(self, text: str):
        await asyncio.sleep(0)
        raise ValueError(text)

    async def relay(self, other, text: str):
        return await other.afail(text)  # re-raised here: the type survives the chain

    async def ask(self, peer, me) -> str:
        got = await peer.back(me)  # A awaits B; B calls back into A on the same chain
        return f"A<{got}>"

    async def back(self, me) -> str:
        return f"B<{await me.apong()}|{me.pong()}>"

    async def apong(self) -> str:
        return "apong"

    def pong(self) -> str:
        return "pong"


class MyError(Exception):
    pass


class AsyncTalker(AgentBase):
    async def reply(self, x: Msg | None = None) -> Msg:
        await asyncio.sleep(0)
        return Msg(self.name, (x.content if x is not None else 0) + 1)

    async def observe(self, x) -> None:
        await asyncio.sleep(0)
        self.memory.append(x)


class SyncTalker(AgentBase):
    def reply(self, x: Msg | None = None) -> Msg:
        return Msg(self.name, (x.content if x is not None else 0) + 1)


def where(srv) -> dict:
    return {"host": "127.0.0.1", "port": srv.port}


# ------------------------------------------------------------------ 1. awaitable futures
def test_await_gives_the_value_or_raises_what_result_would(server):
    w = Worker(to_dist=where(server))
    agent = AsyncTalker("t", to_dist=where(server))

    async def main():
        assert await w.anap(0.01, 7) == 7
        ph = agent(Msg("u", 1))
        assert isinstance(ph, mesh.Placeholder)
        msg = await ph
        assert isinstance(msg, Msg) and msg.content == 2
        with pytest.raises(mesh.RemoteError, match="boom"):
            await w.afail("boom")
        fut = w.anap(0, 3)
        assert fut.result(timeout=10) == 3  # already done: await returns at once
        assert await fut == 3

    asyncio.run(asyncio.wait_for(main(), 30))


def test_awaits_never_block_the_loop_and_cost_no_thread_each(server):
    w = Worker(to_dist=where(server))

    async def main():
        ticks = 0
        stop = False

        async def ticker():
            nonlocal ticks
            while not stop:
                ticks += 1
                await asyncio.sleep(0.01)

        t = asyncio.ensure_future(ticker())
        assert await w.anap(0.5, 1) == 1
        assert ticks >= 10, ticks  # the loop ran on while the await waited (50 if nothing else ran)
        before = threading.active_count()
        # one object runs its calls one at a time: the first holds the other 1,999 back, all awaited
        futs = [w.anap(0.5 if i == 0 else 0, i) for i in range(2000)]
        gathered = asyncio.gather(*futs)
        await asyncio.sleep(0.1)
        during = threading.active_count()
        assert not futs[-1].done()
        assert await gathered == list(range(2000))
        stop = True
        await t
        return before, during

    before, during = asyncio.run(asyncio.wait_for(main(), 50))
    assert during <= before + 2, (before, during)  # 2,000 pending awaits: no thread each


def test_a_future_can_be_awaited_from_any_loop_and_read_from_threads(server):
    w = Worker(to_dist=where(server))
    fut = w.anap(0.3, 5)
    got: list = []

    def other_loop():
        got.append(asyncio.run(_await(fut)))

    threads = [threading.Thread(target=other_loop) for _ in range(3)]
    for t in threads:
        t.start()
    assert asyncio.run(_await(fut)) == 5
    for t in threads:
        t.join(20)
    assert got == [5, 5, 5] and fut.result(timeout=1) == 5


async def _await(fut):
    return await fut


def test_await_fetches_big_results_and_futures_from_elsewhere_without_blocking(server):
    w = Worker(to_dist=where(server))
    other = Worker(to_dist=where(server))

    async def main():
        assert await w.make(200_000) == b"p" * 200_000  # over the push limit: a `result` fetch
        inner = w.anap(0.2, 9)
        assert await other.forward(inner) == 9  # a forwarded future: followed, awaited too
        passed = other.echo(w.anap(0.2, 4))  # a future passed back from elsewhere: no call here
        assert isinstance(passed, mesh.AsyncResult)
        assert await passed == 4

    asyncio.run(asyncio.wait_for(main(), 30))


def test_reentrancy_by_call_chain_with_awaits_in_server_coroutines(spawn_server):
    s1, s2 = spawn_server(port=0, capacity=1), spawn_server(port=0, capacity=1)
    a = Worker(to_dist=where(s1))
    b = Worker(to_dist=where(s2))
    # A.ask awaits B.back, which awaits A.apong and calls A.pong: same chain, A re-enters
    assert a.ask(b, a).result(timeout=20) == "A<B<apong|pong>>"


# ------------------------------------------------------------------ 2. async def on proxies and local agents
def test_async_def_methods_return_futures_at_once_on_a_proxy(server):
    w = Worker(to_dist=where(server))
    t0 = time.monotonic()
    fut = w.anap(0.5, 1)
    assert isinstance(fut, mesh.AsyncResult) and time.monotonic() - t0 < 0.4
    assert fut.result(timeout=10) == 1
    agent = AsyncTalker("t", to_dist=where(server))
    assert isinstance(agent(Msg("u", 1)), mesh.Placeholder)
    assert isinstance(agent.reply(Msg("u", 1)), mesh.Placeholder)
    assert agent.reply(Msg("u", 4)).content == 5


def test_an_async_agent_is_awaited_the_same_way_local_and_distributed(server):
    import inspect

    assert inspect.iscoroutinefunction(AsyncTalker.__call__)  # follows reply: a coroutine function
    assert not inspect.iscoroutinefunction(SyncTalker.__call__)  # old agents: sync, as before
    assert SyncTalker("s")(Msg("u", 1)).content == 2

    class Sub(AsyncTalker):  # a sync reply again below an async one: __call__ follows
        def reply(self, x=None):
            return Msg(self.name, "sync")

    assert not inspect.iscoroutinefunction(Sub.__call__) and Sub("x")(None).content == "sync"

    async def talk(a, b):
        x = await a(None)
        await b.observe(x)
        return await b(x)

    local = asyncio.run(talk(AsyncTalker("a"), AsyncTalker("b")))
    dist = asyncio.run(talk(AsyncTalker("a").to_dist(**where(server)), AsyncTalker("b", to_dist=where(server))))
    assert local.content == dist.content == 2


# ------------------------------------------------------------------ 3. .remote()
def test_remote_returns_a_future_at_once_for_every_method_in_call_order(server):
    w = Worker(to_dist=where(server))
    t0 = time.monotonic()
    slow = w.nap.remote(0.5, 1)  # a sync method: a future at once
    assert isinstance(slow, mesh.AsyncResult) and time.monotonic() - t0 < 0.4
    futs = [w.record.remote(str(i)) for i in range(5)]
    assert w.record("sync") == ["0", "1", "2", "3", "4", "sync"]  # a sync call goes behind them
    assert [f.result(timeout=10) for f in futs][-1] == ["0", "1", "2", "3", "4"]
    assert slow.result(timeout=10) == 1
    assert isinstance(w.anap.remote(0, 2), mesh.AsyncResult)
    agent = SyncTalker("s", to_dist=where(server))
    ph = agent.reply.remote(Msg("u", 1))
    assert isinstance(ph, mesh.Placeholder) and ph.content == 2

    async def main():
        return await asyncio.gather(*(w.echo.remote(i) for i in range(100)))

    assert asyncio.run(asyncio.wait_for(main(), 30)) == list(range(100))


# ------------------------------------------------------------------ 4. wait / as_completed
def test_wait_returns_the_first_done_and_pending_in_the_order_given(server):
    ws = [Worker(to_dist=where(server)) for _ in range(3)]
    agent = SyncTalker("s", to_dist=where(server))
    slow, fast, mid = ws[0].anap(1.5, 0), ws[1].anap(0.05, 1), ws[2].nap.remote(0.4, 2)
    ph = agent(Msg("u", 0))
    done, pending = mesh.wait([slow, fast, mid, ph], num_returns=3, timeout=20)
    assert len(done) == 3 and pending == [slow]
    assert set(map(id, done)) == {id(fast), id(mid), id(ph)} and done.index(fast) < done.index(mid)
    done, pending = mesh.wait([slow], timeout=0.05)  # times out: what is done by then
    assert done == [] and pending == [slow]
    done, pending = mesh.wait([slow, fast], num_returns=2)
    assert done == [slow, fast] and pending == []  # the order given, as ray.wait's
    with pytest.raises(ValueError, match="num_returns"):
        mesh.wait([fast], num_returns=2)
    with pytest.raises(TypeError, match="mesh futures"):
        mesh.wait([fast, 3])
    err = ws[1].afail("x")
    assert mesh.wait([err], timeout=10)[0] == [err]  # a failed future is done


def test_as_completed_yields_as_they_finish_and_times_out_from_threads(server):
    ws = [Worker(to_dist=where(server)) for _ in range(3)]
    futs = [ws[i].anap(d, i) for i, d in enumerate([0.8, 0.05, 0.3])]
    seen: list = []

    def reader():
        seen.extend(f.result() for f in mesh.as_completed(futs, timeout=20))

    t = threading.Thread(target=reader)
    t.start()
    t.join(20)
    assert seen == [1, 2, 0]
    slow = ws[0].anap(5, 9)
    quick = ws[1].anap(0, 8)
    got = []
    with pytest.raises(mesh.CallTimeout) as info:
        for f in mesh.as_completed([slow, quick], timeout=0.5):
            got.append(f.result())
    assert got == [8] and isinstance(info.value, TimeoutError) and "1 of 2" in str(info.value)


def test_asyncio_gather_wait_and_as_completed_take_the_futures(server):
    ws = [Worker(to_dist=where(server)) for _ in range(3)]
    agent = AsyncTalker("t", to_dist=where(server))

    async def main():
        futs = [ws[i].anap(d, i) for i, d in enumerate([0.4, 0.05, 0.2])]
        order = [await f for f in asyncio.as_completed(futs, timeout=20)]
        assert order == [1, 2, 0]
        got = await asyncio.gather(ws[0].anap(0, 5), agent(Msg("u", 1)), ws[1].echo.remote("e"))
        assert got[0] == 5 and got[1].content == 2 and got[2] == "e"
        tasks = [asyncio.ensure_future(f) for f in (ws[0].anap(0.5, 1), ws[1].anap(0, 2))]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        assert [t.result() for t in done] == [2]
        await asyncio.gather(*pending)

    asyncio.run(asyncio.wait_for(main(), 30))


# ------------------------------------------------------------------ 5. remote exceptions keep their type
def test_remote_exceptions_are_also_instances_of_their_class(spawn_server):
    srv = spawn_server(port=0, capacity=4)
    w = Worker(to_dist=where(srv))
    with pytest.raises(ValueError, match="bad value") as info:
        w.fail("value", "bad value")
    err = info.value
    assert isinstance(err, mesh.RemoteError) and err.remote_type == "ValueError"
    assert "bad value" in err.remote_traceback
    assert type(err) is type(pytest.raises(ValueError, w.fail, "value", "again").value)  # one class per type
    with pytest.raises(KeyError) as info:
        w.fail("key", "k")
    assert isinstance(info.value, LookupError) and "KeyError: 'k'" in str(info.value)
    with pytest.raises(MyError):  # a class of the caller's module (sent by value to the server)
        w.fail("mine", "m")
    # a class whose constructor wants other arguments (five for UnicodeDecodeError) is still caught by it
    with pytest.raises(UnicodeDecodeError) as info:
        w.fail("unicode", "u")
    assert isinstance(info.value, mesh.RemoteError) and info.value.remote_type == "UnicodeDecodeError"

    async def main():
        with pytest.raises(ValueError, match="async bad"):
            await w.afail("async bad")

    asyncio.run(asyncio.wait_for(main(), 20))
    other = Worker(to_dist=where(srv))
    with pytest.raises(ValueError, match="chained") as info:  # A -> B raises, A re-raises: still a ValueError
        w.relay(other, "chained").result(timeout=20)
    assert "re-raised on the way back" in info.value.remote_traceback


def test_classes_not_already_imported_are_not_imported_unless_the_reply_may_import():
    from mesh._errors import remote_error

    assert "xml.dom.minidom" not in sys.modules or pytest.skip("imported already")
    err = remote_error("ExpatError", "m", "", "xml.dom.minidom:Node")
    assert type(err) is mesh.RemoteError and "xml.dom.minidom" not in sys.modules
    from mesh.client._replies import decode_plain

    header = {"op": "err", "kind": "remote", "type": "X", "msg": "m", "etype": "xml.dom.minidom:Node"}
    with pytest.raises(mesh.RemoteError):  # an admin reply (ping, status) never imports
        decode_plain((header, b"", []), "srv")
    assert "xml.dom.minidom" not in sys.modules
    assert type(remote_error("X", "m", "", "no_such_module_here:E", may_import=True)) is mesh.RemoteError
    assert type(remote_error("X", "m", "", "os; import evil:E", may_import=True)) is mesh.RemoteError
    err = remote_error("JSONDecodeError", "m", "", "json.decoder:JSONDecodeError", may_import=True)
    assert isinstance(err, ValueError) and isinstance(err, mesh.RemoteError)
    assert type(remote_error("X", "m", "", "builtins:SystemExit")) is mesh.RemoteError  # not an Exception
    assert type(remote_error("X", "m", "", "builtins:StopIteration")) is mesh.RemoteError  # would break awaits
    e = remote_error("ValueError", "m", "tb", "builtins:ValueError")
    import pickle

    again = pickle.loads(pickle.dumps(e))  # forwarded as a value: rebuilt by class name where it lands
    assert isinstance(again, ValueError) and again.remote_traceback == "tb"


def test_the_remote_traceback_names_the_users_file_for_classes_sent_by_value(spawn_server):
    srv = spawn_server(port=0, capacity=2)
    w = Worker(to_dist=where(srv))
    with pytest.raises(ValueError) as info:
        w.fail("value", "where")
    tb = info.value.remote_traceback
    assert __file__ in tb and "in fail" in tb, tb


# ------------------------------------------------------------------ 8. awaitables are not values
def test_an_awaitable_as_an_argument_is_refused_at_call_time_naming_the_method(server):
    w = Worker(to_dist=where(server))

    async def main():
        coro = w_local.anap(0, 1)
        with pytest.raises(mesh.SerializationError, match=r"argument 1 of Worker\.echo\(\.\.\.\) is a coroutine, not a value: await it"):
            w.echo(coro)
        assert await coro == 1  # untouched: still the caller's to await
        task = asyncio.ensure_future(asyncio.sleep(0, 5))
        with pytest.raises(mesh.SerializationError, match=r"argument 'x' of Worker\.echo\(\.\.\.\) is an asyncio task"):
            w.echo.remote(x=task)
        with pytest.raises(mesh.SerializationError, match=r"Worker\.anap\(\.\.\.\) is an asyncio future"):
            w.anap(asyncio.get_running_loop().create_future())
        assert await w.echo(w.anap(0, 3)) == 3  # a mesh future is awaitable and travels as it is
        assert await task == 5

    w_local = Worker()
    asyncio.run(asyncio.wait_for(main(), 20))


# ------------------------------------------------------------------ 6. an AgentScope 1.0-style seed
def test_dialogue_written_for_asyncio_runs_distributed_with_only_to_dist_added():
    seeds = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")
    proc = subprocess.run([sys.executable, "dialogue_async.py"], cwd=seeds, capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "dialogue_async ok" in proc.stdout  # the script asserts: local transcript == distributed one
    assert "A: answer to question 2 (3 heard)" in proc.stdout and proc.stdout.count("Q: ") == 4


# ------------------------------------------------------------------ 7. typing
@pytest.mark.skipif(shutil.which("mypy", path=os.path.dirname(sys.executable)) is None and shutil.which("mypy") is None,
                    reason="mypy is not installed (pip install mypy, or the [test] extra)")
@pytest.mark.slow  # mypy from cold: ~15 s, twice (at load 20 over a minute: its own timeout)
@pytest.mark.timeout(300)
def test_type_checkers_accept_to_dist_and_async_agents(tmp_path):
    here = os.path.dirname(os.path.abspath(__file__))
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\nplugins = mesh.mypy_plugin\nfollow_imports = silent\n")
    bad = tmp_path / "bad.py"
    bad.write_text("from typing_examples import WebAgent\nWebAgent('W0', nope=1)\nWebAgent('W0').to_dist(port=[])\n")

    def mypy(*files):
        return subprocess.run(
            [sys.executable, "-m", "mypy", "--config-file", str(config), "--no-incremental", "--cache-dir", str(tmp_path / "mypy-cache"), *files],
            capture_output=True, text=True, timeout=240, cwd=here, env={**os.environ, "MYPYPATH": os.pathsep.join([os.path.dirname(here), here])},
        )

    ok = mypy(os.path.join(here, "typing_examples.py"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    refused = mypy(str(bad))  # the checks still bite: a wrong keyword and a wrong port type
    assert 'Unexpected keyword argument "nope"' in refused.stdout and '"to_dist"' in refused.stdout, refused.stdout


def test_py_typed_ships():
    import importlib.resources

    assert importlib.resources.files("mesh").joinpath("py.typed").is_file()


@pytest.mark.skipif(
    shutil.which("pyright", path=os.path.dirname(sys.executable)) is None or shutil.which("node") is None,
    reason="pyright (the test extra) or Node.js, which it runs on, is not installed",
)
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_pyright_accepts_the_typing_examples():
    here = os.path.dirname(os.path.abspath(__file__))
    pyright = shutil.which("pyright", path=os.path.dirname(sys.executable))
    out = subprocess.run([pyright, os.path.join(here, "typing_examples.py")], capture_output=True, text=True, timeout=240, cwd=here)
    assert out.returncode == 0 and "0 errors" in out.stdout, out.stdout + out.stderr
