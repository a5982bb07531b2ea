"""The coroutine lane (mesh.server._coro_fast.CoroLane): plain kept calls of ``async def`` methods
started in one pass on the hosting thread give what the general path gives: values of a coroutine
that never suspends and of one that does, errors of their type, order with sync calls of the same
object, cancellation during the first step and at an await, ``asyncio.timeout`` and
``current_task`` in the call, results held then read again; and they step aside when the actor is
busy (queued calls keep their order)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import mesh
from mesh import RpcMeta
from mesh.server import _coro_fast
from tests.conftest import wait_until


class Coro(metaclass=RpcMeta):
    def __init__(self) -> None:
        self.log: list = []
        self.steps = 0

    async def noop(self, x):
        self.log.append(x)
        return x

    def add(self, x):
        self.log.append(x)
        return len(self.log)

    def read(self) -> list:
        return self.log

    async def napped(self, x, seconds=0.001):
        await asyncio.sleep(seconds)
        self.log.append(x)
        return x

    async def fail_after_nap(self, kind):
        await asyncio.sleep(0.001)
        if kind == "key":
            raise KeyError("nope")
        raise ValueError("bad")

    async def fail_at_once(self):
        raise LookupError("at once")

    async def spin_then_sleep(self):
        # the first step runs long (the watchdog hands the I/O loop off, so the cancel is read),
        # then the call awaits: CancelledError there
        deadline = time.monotonic() + 10
        while not mesh.cancelled() and time.monotonic() < deadline:
            time.sleep(0.005)
        self.steps = 1
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.steps = 2
            raise
        return "not cancelled"

    async def sleeper(self):
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.steps = 3
            raise
        return "woke"

    async def task_things(self):
        task = asyncio.current_task()
        async with asyncio.timeout(5):
            await asyncio.sleep(0)
        return task is not None and task is asyncio.current_task()

    def get_steps(self) -> int:
        return self.steps

    async def via(self, relay, x):
        return await relay.back(self, x)

    async def bump(self, x):
        return x + 1


class Relay(metaclass=RpcMeta):
    async def back(self, caller, x):
        return await caller.bump(x)


class Counted:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.runs = 0
        real = _coro_fast.CoroLane.handle

        def counted(lane, *args, **kwargs):
            self.runs += 1
            return real(lane, *args, **kwargs)

        monkeypatch.setattr(_coro_fast.CoroLane, "handle", counted)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Counted:
    return Counted(monkeypatch)


@pytest.fixture(params=[True, False], ids=["eager", "queued"])
def srv(request, counted: Counted, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(_coro_fast, "EAGER", request.param)  # the first step in the handler, or queued
    server = mesh.AgentServer(port=0, capacity=8, advertise=False).launch(in_subprocess=False)
    try:
        yield server
    finally:
        server.shutdown()


def _where(server) -> dict:
    return {"host": server.host, "port": server.port}


def _started(obj) -> None:
    """The server's loop runs (the first coroutine call starts it, on the general path)."""
    assert obj.noop("warm").result(timeout=10) == "warm"


def test_a_coroutine_that_never_suspends_is_answered_by_the_lane(srv, counted):
    obj = Coro(to_dist=_where(srv))
    _started(obj)
    counted.runs = 0
    futures = [obj.noop(i) for i in range(300)]
    assert [f.result(timeout=20) for f in futures] == list(range(300))
    assert counted.runs > 0
    assert [f.result() for f in futures[:3]] == [0, 1, 2]  # held, read again from the store

    async def awaited():
        return [await obj.noop(("a", i)) for i in range(50)]

    assert asyncio.run(awaited()) == [("a", i) for i in range(50)]


def test_order_with_sync_methods_of_the_same_object(srv, counted):
    obj = Coro(to_dist=_where(srv))
    _started(obj)
    counted.runs = 0
    futures = []
    for i in range(400):
        futures.append(obj.napped(i, 0.0005) if i % 2 else obj.noop(i))
        if i % 40 == 39:
            assert obj.add(("sync", i)) > 0  # runs after every call sent before it
    assert [f.result(timeout=30) for f in futures] == list(range(400))
    assert counted.runs > 0
    log = obj.read()[1:]
    assert [x for x in log if type(x) is int] == list(range(400))  # arrival order, one at a time
    for i in range(39, 400, 40):  # each sync call after the coroutine calls before it
        assert log.index(("sync", i)) > log.index(i)


def test_errors_keep_their_type_after_a_suspension_and_at_once(srv, counted):
    obj = Coro(to_dist=_where(srv))
    _started(obj)
    counted.runs = 0
    with pytest.raises(KeyError):
        obj.fail_after_nap("key").result(timeout=10)
    with pytest.raises(ValueError):
        obj.fail_after_nap("value").result(timeout=10)
    with pytest.raises(LookupError):
        obj.fail_at_once().result(timeout=10)
    assert counted.runs == 3
    assert obj.noop(7).result(timeout=10) == 7  # the object goes on


def test_cancel_during_the_first_step_raises_at_the_next_await(srv, counted):
    obj = Coro(to_dist=_where(srv))
    _started(obj)
    counted.runs = 0
    fut = obj.spin_then_sleep()
    wait_until(lambda: counted.runs == 1, timeout=5)
    assert fut.cancel()
    with pytest.raises(mesh.Cancelled):
        fut.result(timeout=10)
    wait_until(lambda: obj.get_steps() == 2, timeout=10)  # CancelledError at the await, inside the method
    assert obj.noop(1).result(timeout=10) == 1


def test_calls_read_while_a_step_holds_the_hosting_thread_take_the_lane_too(srv, counted):
    a, b = Coro(to_dist=_where(srv)), Coro(to_dist=_where(srv))
    _started(a)
    counted.runs = 0
    spinning = a.spin_then_sleep()  # holds the hosting thread: the I/O loop is handed off
    wait_until(lambda: counted.runs == 1, timeout=5)
    values = [b.noop(i) for i in range(30)]  # read by the thread that took the I/O loop over
    wait_until(lambda: counted.runs == 31, timeout=10)  # the lane took them there, while A still spins
    assert spinning.cancel()  # A's step ends: the loop's thread runs B's tasks
    with pytest.raises(mesh.Cancelled):
        spinning.result(timeout=10)
    assert [f.result(timeout=20) for f in values] == list(range(30))


def test_cancel_of_a_sleeping_lane_call_and_asyncio_task_apis(srv, counted):
    obj = Coro(to_dist=_where(srv))
    _started(obj)
    counted.runs = 0
    fut = obj.sleeper()
    wait_until(lambda: srv._host.servicer.calls.aio.running >= 1, timeout=5)
    assert fut.cancel()
    with pytest.raises(mesh.Cancelled):
        fut.result(timeout=10)
    wait_until(lambda: obj.get_steps() == 3, timeout=10)
    assert obj.task_things().result(timeout=10) is True  # a real current task: asyncio.timeout works
    assert counted.runs == 2


def test_a_busy_actor_sends_calls_the_general_way_in_order(srv, counted):
    obj = Coro(to_dist=_where(srv))
    _started(obj)
    counted.runs = 0
    first = obj.napped("slow", 0.2)
    rest = [obj.noop(i) for i in range(20)]  # queued behind it: the mailbox, not the lane
    assert first.result(timeout=10) == "slow"
    assert [f.result(timeout=10) for f in rest] == list(range(20))
    assert obj.read()[1:] == ["slow", *range(20)]
    assert counted.runs >= 1


def test_a_chain_re_enters_from_a_lane_call(srv, counted):
    a, b = Coro(to_dist=_where(srv)), Relay(to_dist=_where(srv))
    _started(a)
    counted.runs = 0
    assert a.via(b, 5).result(timeout=20) == 6  # A (busy awaiting B) -> B -> A.add: the chain re-enters
    assert counted.runs >= 1


def test_calls_of_different_objects_interleave(srv):
    objs = [Coro(to_dist=_where(srv)) for _ in range(20)]
    _started(objs[0])
    t = time.monotonic()
    futures = [o.napped(i, 0.3) for i, o in enumerate(objs)]
    assert [f.result(timeout=20) for f in futures] == list(range(20))
    assert time.monotonic() - t < 0.3 * 20 / 2  # they slept together, not one after another
    assert threading.active_count() > 0
