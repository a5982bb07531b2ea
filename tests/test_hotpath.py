"""Inline calls (mesh.server._inline): a short call of an idle actor runs on the I/O thread that
read it; order, re-entrancy, waits and stalls behave as on a worker."""

from __future__ import annotations

import threading

import pytest

import mesh
from mesh import RpcMeta, async_func
from mesh.server._inline import WARMUP, InlinePolicy, threshold_from_env
from tests.conftest import wait_until

_gate = threading.Event()  # in-process server: the test and the objects share it
_gate.set()


class Log(metaclass=RpcMeta):
    def __init__(self) -> None:
        self.items: list[int] = []
        self.threads: set[str] = set()

    def add(self, i: int) -> int:
        self.items.append(i)
        self.threads.add(threading.current_thread().name)
        return i

    @async_func
    def add_async(self, i: int) -> int:
        return self.add(i)

    def read(self) -> list:
        return self.items

    def where(self) -> list:
        return sorted(self.threads)


class Caller(metaclass=RpcMeta):
    """``call(other)``: short while ``other`` is None; with a proxy it calls ``other.back(me)``,
    which calls this object again on the same call chain (re-entrancy)."""

    def __init__(self) -> None:
        self.me = None

    def set_me(self, me) -> None:
        self.me = me

    def call(self, other) -> str:
        if other is None:
            return "short"
        return other.back(self.me)

    def inner(self) -> str:
        return "inner"


class Back(metaclass=RpcMeta):
    def back(self, caller) -> str:
        return "back:" + caller.inner()


class Gate(metaclass=RpcMeta):
    def wait(self) -> str:
        # not a mesh wait: only the watchdog can move the I/O loop away from it
        return "open" if _gate.wait(20) else "timeout"

    def open(self) -> bool:
        _gate.set()
        return True


def _warm(policy, cls: type, method: str, call) -> None:
    """Call until the method's history allows inline runs (its first, cold runs may be slow on a loaded machine)."""
    for _ in range(2000):
        call()
        if policy.allows(cls, method):
            return
    raise AssertionError(f"{cls.__name__}.{method} never became short: {policy.snapshot()}")


def _servicer(srv: mesh.AgentServer):
    return srv._host.servicer  # type: ignore[union-attr]


def _where(srv):
    return {"host": srv.host, "port": srv.port}


def test_short_calls_run_on_the_io_thread_in_arrival_order(server: mesh.AgentServer) -> None:
    log = Log(to_dist=_where(server))
    count = iter(range(10**6))
    _warm(_servicer(server).calls.inline, Log, "add", lambda: log.add(next(count)))  # on workers first
    # (batched, 600 calls may all be queued before the method's warm-up ends: warm it up first)
    _warm(_servicer(server).calls.inline, Log, "add_async", lambda: log.add_async(next(count)).result(10))
    first = next(count)
    futures = [log.add_async(i) for i in range(first, first + 600)]
    assert [f.result(10) for f in futures] == list(range(first, first + 600))
    assert log.read() == list(range(first)) + list(range(first, first + 600))  # one at a time, in arrival order
    names = log.where()
    assert any(n.startswith("mesh-io") for n in names), names  # some ran inline
    assert any(not n.startswith("mesh-io") for n in names), names  # the first ones on workers


def test_an_inline_call_that_waits_hands_the_loop_off_and_reentrancy_still_works(server: mesh.AgentServer) -> None:
    where = _where(server)
    a, b = Caller(to_dist=where), Back(to_dist=where)
    a.set_me(a)
    policy = _servicer(server).calls.inline
    _warm(policy, Caller, "call", lambda: a.call(None))
    # now inline: it calls b, which calls a.inner() on the same chain while a.call waits (A -> B -> A)
    assert a.call(b) == "back:inner"
    assert not policy.allows(Caller, "call")  # it waited once: never inline again
    assert a.call(b) == "back:inner"  # on a worker now
    log = Log(to_dist=where)  # the server goes on serving, inline calls too
    _warm(policy, Log, "add", lambda: log.add(0))
    assert [log.add_async(i).result(10) for i in range(3)] == [0, 1, 2]


def test_a_stalled_inline_call_does_not_stop_the_server(server: mesh.AgentServer) -> None:
    where = _where(server)
    g, opener = Gate(to_dist=where), Gate(to_dist=where)
    _warm(_servicer(server).calls.inline, Gate, "wait", g.wait)
    _gate.clear()
    try:
        stuck = g.wait.remote()  # runs inline and blocks the I/O thread until the watchdog hands off
        # it goes out on the client's I/O thread, the sync call below on this thread's own socket:
        # open only once it runs (else a fast sync call may overtake it and it never waits)
        wait_until(lambda: _servicer(server).objects.get(g._mesh_id).running >= 1, timeout=10)
        assert opener.open() is True  # served by the new I/O thread while the other one waits
        assert stuck.result(10) == "open"
    finally:
        _gate.set()
    wait_until(lambda: not _servicer(server).calls.inline.allows(Gate, "wait"), timeout=30)  # slow: back to workers
    assert g.wait() == "open"


def test_a_cancelled_or_late_call_is_answered_as_before_when_inline(server: mesh.AgentServer) -> None:
    log = Log(to_dist=_where(server))
    _warm(_servicer(server).calls.inline, Log, "add", lambda: log.add(0))
    with mesh.deadline(5):
        assert log.add(100) == 100
    f = log.add_async(101)
    assert f.result(10) == 101
    f.cancel()  # finished: nothing to stop
    assert log.read()[-2:] == [100, 101]


def test_policy_needs_a_warm_up_and_forgets_a_method_that_waited() -> None:
    p = InlinePolicy(threshold=50e-6)
    for _ in range(WARMUP - 1):
        p.record(Log, "add", 5e-6)
    assert not p.allows(Log, "add")
    p.record(Log, "add", 5e-6)
    assert p.allows(Log, "add")
    p.record(Log, "add", 0.05)  # one slow run: out until many short ones bring the average down
    assert not p.allows(Log, "add")
    for _ in range(200):
        p.record(Log, "add", 5e-6)
    assert p.allows(Log, "add")
    p.waited(Log, "add")
    for _ in range(200):
        p.record(Log, "add", 5e-6)
    assert not p.allows(Log, "add")
    assert p.snapshot()["Log.add"]["inline"] is False


@pytest.mark.parametrize("raw, expected", [("", 50e-6), ("0", 0.0), ("200", 200e-6), ("junk", 50e-6), ("-3", 0.0)])
def test_threshold_from_the_environment(monkeypatch: pytest.MonkeyPatch, raw: str, expected: float) -> None:
    monkeypatch.setenv("MESH_INLINE_US", raw)
    assert threshold_from_env() == pytest.approx(expected)
    p = InlinePolicy()
    for _ in range(WARMUP + 1):
        p.record(Log, "add", 0.0)
    assert p.allows(Log, "add") is (expected > 0)
