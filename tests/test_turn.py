"""The lean turn of the I/O loop and the sync fast lane's kept checks (NOTES-turn): what is due
still runs on time, a long inline call is still caught and logged, and the fast lane's cache of
checked requests follows the object and the method's history."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import mesh
from mesh import RpcMeta
from mesh.server import _inline_fast
from transport._loop import Call, Loop
from tests.conftest import wait_until


@pytest.fixture
def loop():
    lp = Loop(teardown=lambda: lp.abort_queued(RuntimeError("stopped")), name="turn-test")
    lp.start()
    try:
        yield lp
    finally:
        lp.stop()
        lp.thread.join(5)


def test_a_call_at_entry_added_while_the_loop_sleeps_runs_on_time(loop: Loop) -> None:
    ran = threading.Event()
    t0 = time.monotonic()
    loop.submit(Call(loop.add_timer, [t0 + 30.0, 30.0, lambda: None]))  # the loop sleeps its 1 s slices
    time.sleep(0.05)  # (not synchronisation: lets the loop go to sleep first)
    loop.submit(Call(lambda: loop.call_at(time.monotonic() + 0.05, lambda _arg: ran.set())))
    assert ran.wait(5)
    assert time.monotonic() - t0 < 0.9  # at its time, not at the end of the loop's 1 s slice


def test_timers_run_at_their_interval_and_a_removed_one_stops(loop: Loop) -> None:
    ticks: list[float] = []
    fn = lambda: ticks.append(time.monotonic())  # noqa: E731
    loop.submit(Call(loop.add_timer, [time.monotonic() + 0.02, 0.02, fn]))
    wait_until(lambda: len(ticks) >= 5, timeout=10)
    timers = loop.timers
    loop.submit(Call(lambda: timers.__setitem__(slice(None), [])))  # as Node.remove_timer does
    wait_until(lambda: not loop.timers, timeout=5)
    n = len(ticks)
    done = threading.Event()
    loop.submit(Call(lambda: loop.call_at(time.monotonic() + 0.1, lambda _arg: done.set())))
    assert done.wait(5)  # the loop goes on (an early wake-up at the removed timer's time is harmless)
    assert len(ticks) <= n + 1


class Kit(metaclass=RpcMeta):
    def echo(self, x):
        return x

    def ping(self) -> int:
        return 1

    def nap(self, seconds: float) -> float:
        if seconds:  # (no sleep(0) while warming up: it gives the GIL away, and the run looks slow)
            time.sleep(seconds)
        return seconds


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list:
    seen: list = []
    run = _inline_fast.FastLane._run

    def counted(lane, actor, method, *args, **kwargs):
        seen.append(method)
        return run(lane, actor, method, *args, **kwargs)

    monkeypatch.setattr(_inline_fast.FastLane, "_run", counted)
    return seen


@pytest.fixture
def server():
    srv = mesh.AgentServer(port=0, capacity=8, advertise=False).launch(in_subprocess=False)
    try:
        yield srv
    finally:
        srv.shutdown()


def _fast(runs: list, call, method: str):
    for _ in range(2000):
        n = runs.count(method)
        value = call()
        if runs.count(method) > n:
            return value
    raise AssertionError(f"{method} never took the fast lane")


def test_the_kept_checks_follow_a_method_that_waited_and_an_object_that_went(server, runs: list) -> None:
    servicer = server._host.servicer
    kit = Kit(to_dist={"host": server.host, "port": server.port})
    assert _fast(runs, lambda: kit.echo("a"), "echo") == "a"
    assert _fast(runs, lambda: kit.echo("b"), "echo") == "b"  # the second from the kept checks
    hist = servicer.calls.inline.history(Kit, "echo")
    servicer.calls.inline.waited(Kit, "echo")  # as when a run waited on another task
    assert servicer.calls.inline.history(Kit, "echo") is hist and hist[2] is True  # changed in place
    n = len(runs)
    for i in range(20):
        assert kit.echo(i) == i
    assert len(runs) == n  # never inline again
    other = Kit(to_dist={"host": server.host, "port": server.port})
    assert _fast(runs, other.ping, "ping") == 1
    servicer.objects.drop(servicer.objects.get(other._mesh_id), "test")
    n = len(runs)
    with pytest.raises(Exception, match="gone|no object|not found|notfound"):
        other.ping()
    assert len(runs) == n


def test_a_long_inline_call_is_still_handed_off(server, runs: list) -> None:
    servicer = server._host.servicer
    kit = Kit(to_dist={"host": server.host, "port": server.port})
    other = Kit(to_dist={"host": server.host, "port": server.port})
    assert other.ping() == 1  # created (pipelined) before the long call: its answer is all that is left
    _fast(runs, lambda: kit.nap(0), "nap")
    out: list = []
    t = threading.Thread(target=lambda: out.append(kit.nap(3.0)))  # (long enough for a loaded machine)
    t.start()
    try:
        wait_until(lambda: servicer.objects.get(kit._mesh_id).running >= 1, timeout=10)
        assert other.ping() == 1  # the watchdog handed the I/O loop to a new thread meanwhile
        assert t.is_alive()  # answered while the long call still runs
    finally:
        t.join(10)
    assert out == [3.0]
    assert not servicer.calls.inline.allows(Kit, "nap")  # a slow run: back to workers


class Hosted(metaclass=RpcMeta):
    async def later(self, seconds: float) -> float:
        await asyncio.sleep(seconds)  # an asyncio timer, set by a step of the hosted loop
        return seconds

    async def owns_io(self) -> bool:
        from mesh._core import runtime

        rt = runtime.current(create=False)
        return rt is not None and rt.node.io_ident == threading.get_ident()

    def echo(self, x):
        return x


def test_the_hosted_loop_keeps_its_timers_and_coroutines_while_turns_serve_sync_calls(spawn_server) -> None:
    srv = spawn_server(port=0, capacity=4)
    obj = Hosted(to_dist={"host": "127.0.0.1", "port": srv.port})
    assert obj.owns_io().result(timeout=20) is True  # the loop is hosted, and started
    for i in range(300):  # lone sync calls: turns without an asyncio iteration in between
        assert obj.echo(i) == i
    t0 = time.monotonic()
    fut = obj.later(0.2)
    n = 0
    while not fut.done() and time.monotonic() - t0 < 10:  # sync calls all along its sleep
        assert obj.echo(n) == n
        n += 1
    assert fut.result(timeout=10) == 0.2
    assert time.monotonic() - t0 < 0.9  # its timer fired on time: not held by the turns
    assert obj.owns_io().result(timeout=5) is True
    t0 = time.monotonic()
    assert obj.later(0.05).result(timeout=10) == 0.05  # idle: the turns wait for the timer, no longer
    assert time.monotonic() - t0 < 0.9
