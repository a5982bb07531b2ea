"""The server's async fast lane (issue 16 target 2): plain kept calls (``@async_func``, ``.remote()``)
served in one pass on the I/O thread (mesh.server._async_fast.KeptLane) give what the general path
gives: values, order with sync calls, errors, the results store and its release, fetches by a
copy of the future, cancellation and re-entrancy of a call that hands the I/O loop off; and they
step aside for what they do not cover (deadlines, streams, a cancel that came first, odd values).
Plus the transport's ``Router.reply_ok`` (batched for a client that sends batches, single otherwise)."""

from __future__ import annotations

import threading
import time

import msgpack
import pytest
import zmq

import mesh
import transport
from mesh import RpcMeta, async_func
from mesh.server import _async_fast
from tests.conftest import wait_until
from transport._framing import BATCH, BATCH_HEADER, SIGNATURE, pack_batch, pack_header, split_batch


class Box(metaclass=RpcMeta):
    def __init__(self) -> None:
        self.items: list = []
        self.gate = threading.Event()
        self.saw_cancel = False

    def add(self, x):
        self.items.append(x)
        return len(self.items)

    @async_func
    def add_async(self, x):
        self.items.append(x)
        return len(self.items)

    @async_func
    def value(self, kind):
        if kind == "tuple":
            return (1, 2)
        if kind == "big":
            return "x" * 100_000
        if kind == "int":
            return 2**70
        if kind == "raise":
            raise KeyError("nope")
        return kind

    def read(self) -> list:
        return self.items

    @async_func
    def hold(self, x):
        if x == "wait":  # short until told: then it waits for the gate (the watchdog hands the loop off)
            deadline = time.monotonic() + 10
            while not self.gate.is_set() and time.monotonic() < deadline:
                if mesh.cancelled():
                    self.saw_cancel = True
                    return "stopped"
                time.sleep(0.005)
        return x

    def open(self) -> None:
        self.gate.set()

    @async_func
    def relay(self, other, x):
        if other is None:  # short: becomes fast-lane eligible, then the calls below wait inside it
            return x
        return other.call_back(x)

    def call_back(self, x):
        return x

    @async_func
    def back(self, x):
        return x

    def read_future(self, fut):
        return fut.result()

    @async_func
    def add_where(self, x):
        self.items.append((x, threading.current_thread().name))
        return x


class Counted:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.runs = 0
        run = _async_fast.KeptLane._run

        def counted(lane, *args, **kwargs):
            self.runs += 1
            return run(lane, *args, **kwargs)

        monkeypatch.setattr(_async_fast.KeptLane, "_run", counted)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Counted:
    return Counted(monkeypatch)


@pytest.fixture
def srv(counted: Counted):
    server = mesh.AgentServer(port=0, capacity=8, advertise=False).launch(in_subprocess=False)
    try:
        yield server
    finally:
        server.shutdown()


def _warm(server, cls: type, method: str, call) -> None:
    policy = server._host.servicer.calls.inline
    for _ in range(2000):
        call()
        if policy.allows(cls, method):
            return
    raise AssertionError(f"{cls.__name__}.{method} never became short: {policy.snapshot()}")


def _idle(server) -> None:
    """Wait until no call runs (a worker's reply goes out before its actor is freed)."""
    actors = server._host.servicer.objects.actors
    wait_until(lambda: all(a.running == 0 for a in list(actors.values())), timeout=5)


def _where(server) -> dict:
    return {"host": server.host, "port": server.port}


def test_kept_calls_take_the_lane_and_keep_arrival_order_with_sync_calls(srv, counted):
    box = Box(to_dist=_where(srv))
    _warm(srv, Box, "add_async", lambda: box.add_async(-1).result())
    before = len(box.read())
    counted.runs = 0
    futures = []
    for i in range(600):
        futures.append(box.add_async(i))
        if i % 50 == 49:
            assert box.add(("sync", i)) == before + i + 2 + i // 50  # after every async call before it
    values = [f.result() for f in futures]
    assert counted.runs > 0
    items = box.read()[before:]
    assert [x for x in items if type(x) is int] == list(range(600))  # arrival order
    assert values == sorted(values) and len(set(values)) == 600
    assert [f.result() for f in futures[:5]] == values[:5]  # a result is read again from the store


def test_lane_results_are_held_then_released(srv):
    box = Box(to_dist=_where(srv))
    _warm(srv, Box, "back", lambda: box.back(0).result())
    pool = srv._host.servicer.pool
    futures = [box.back(i) for i in range(200)]
    assert [f.result() for f in futures] == list(range(200))
    assert len(pool) >= 200
    held = srv._host.servicer.results.holders
    assert any(f._mesh_task in tasks for tasks in held._held.values() for f in futures[:1])
    del futures
    wait_until(lambda: len(pool) < 50, timeout=10)  # the caller released them (its futures are gone)


def test_values_the_lane_does_not_pack_itself_and_errors(srv, counted):
    box = Box(to_dist=_where(srv))
    _warm(srv, Box, "value", lambda: box.value("s").result())
    counted.runs = 0
    for kind, want in (("tuple", (1, 2)), ("big", "x" * 100_000), ("int", 2**70)):  # big: over 64 KiB, fetched
        _idle(srv)
        assert box.value(kind).result() == want
    _idle(srv)
    with pytest.raises(KeyError):
        box.value("raise").result()
    _idle(srv)
    assert box.value("after").result() == "after"
    assert counted.runs == 5
    stats = {(r["class"], r["method"]): r for r in srv._host.servicer.calls.stats.snapshot()}
    assert stats[("Box", "value")]["errors"].get("KeyError", 0) >= 1


def test_a_copy_of_a_lane_future_reads_its_result(srv):
    box, other = Box(to_dist=_where(srv)), Box(to_dist=_where(srv))
    _warm(srv, Box, "back", lambda: box.back(0).result())
    fut = box.back("shared")
    assert other.read_future(fut) == "shared"  # the server fetches its own result for the copy
    assert fut.result() == "shared"


def test_deadlines_streams_and_early_cancels_take_the_general_path(srv, counted):
    box = Box(to_dist=_where(srv))
    _warm(srv, Box, "back", lambda: box.back(0).result())
    counted.runs = 0
    with mesh.deadline(5):
        assert box.back(1).result() == 1
    assert counted.runs == 0
    cancels = srv._host.servicer.calls.cancels
    cancels.cancel("a-task-not-seen-yet")  # a tomb: kept calls go the general way while any is left
    assert box.back(2).result() == 2
    assert counted.runs == 0
    cancels._tombs.clear()
    _idle(srv)
    assert box.back(3).result() == 3
    assert counted.runs == 1


def test_a_stalled_lane_call_is_handed_off_and_can_be_cancelled(srv, counted):
    box, other = Box(to_dist=_where(srv)), Box(to_dist=_where(srv))
    _warm(srv, Box, "hold", lambda: box.hold("quick").result())
    _idle(srv)
    counted.runs = 0
    fut = box.hold("wait")  # inline: the watchdog hands the loop off, the call is registered then
    wait_until(lambda: counted.runs >= 1, timeout=5)
    assert other.add(1) == 1  # the server still serves (another object: this one's mailbox is held)
    cancels = srv._host.servicer.calls.cancels
    wait_until(lambda: fut._mesh_task in cancels._scopes, timeout=5)  # registered at the hand-off
    fut.cancel()
    with pytest.raises(mesh.Cancelled):
        fut.result(timeout=10)
    wait_until(lambda: box_saw_cancel(srv), timeout=10)  # mesh.cancelled() became true inside
    assert box.hold("next").result() == "next"  # the actor goes on


def box_saw_cancel(server) -> bool:
    return any(getattr(a.obj, "saw_cancel", False) for a in server._host.servicer.objects.actors.values())


def test_a_lane_call_that_waits_hands_off_and_re_enters(srv, counted):
    a, b = Box(to_dist=_where(srv)), Box(to_dist=_where(srv))
    _warm(srv, Box, "relay", lambda: a.relay(None, 1).result())
    _idle(srv)
    counted.runs = 0
    fut = a.relay(b, "x")  # a kept call on the lane that makes a sync call: waits, loop handed off
    assert fut.result(timeout=10) == "x"
    assert counted.runs == 1
    assert not srv._host.servicer.calls.inline.allows(Box, "relay")  # it waited: never inline again
    assert a.relay(None, 2).result() == 2


def test_a_mailbox_queued_behind_a_worker_goes_back_to_the_io_thread(srv):
    box = Box(to_dist=_where(srv))
    servicer = srv._host.servicer
    servicer.calls.inline._hist[(Box, "add_where")] = [100, 1e-6, False]  # short: may run inline
    actor = wait_until(lambda: next((a for a in list(servicer.objects.actors.values()) if a.id == box._mesh_id
                                     and a.obj is not None and a.obj.items is not None), None), timeout=10)
    # (to_dist() returned before the server built it: the creation is pipelined)
    first = box.hold("wait")  # not warmed up: on a worker, waiting for the gate
    wait_until(lambda: actor.running == 1, timeout=5)
    futures = [box.add_where(i) for i in range(300)]  # queued behind it (the actor is busy)
    wait_until(lambda: len(actor.queue) == 300, timeout=10)
    actor.obj.gate.set()
    assert first.result(timeout=10) == "wait"
    assert [f.result(timeout=10) for f in futures] == list(range(300))
    items = [x for x in actor.obj.items if type(x) is tuple]
    assert [x for x, _ in items] == list(range(300))  # arrival order
    io_name = servicer.calls.node._loop.thread.name
    assert sum(1 for _, name in items if name == io_name) >= 290  # drained on the I/O thread, not a worker


# ------------------------------------------------------------------------------ transport
class _OkServer:
    def __init__(self) -> None:
        self.node = transport.Node()
        self.router = self.node.add_router("127.0.0.1", 0, self.handle)
        self.address = f"tcp://127.0.0.1:{self.router.port}"

    def handle(self, router, identity, header, body, buffers):
        router.reply_ok(identity, header["id"], body)

    def close(self) -> None:
        self.node.close()


def _replies(s: zmq.Socket, want: int) -> list[tuple[dict, bytes, bool]]:
    out: list = []
    while len(out) < want:
        assert s.poll(10_000), f"only {len(out)} of {want} replies"
        frames = s.recv_multipart()
        header = msgpack.unpackb(frames[1])
        if header["op"] == BATCH:
            out += [(h, b, True) for h, b in split_batch(frames[2])]
        else:
            out.append((header, frames[2], False))
    return out


def test_reply_ok_is_the_ok_reply_batched_only_for_a_client_that_batches():
    server = _OkServer()
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.connect(server.address)
    try:
        for i in (0, 1, 300, 70000):  # single requests: single replies, exactly the packed ok header
            s.send_multipart([SIGNATURE, pack_header({"op": "ping", "id": i}), msgpack.packb(i)])
            [(header, body, batched)] = _replies(s, 1)
            assert header == {"op": "ok", "re": i} and msgpack.unpackb(body) == i and not batched
        parts: list = []
        for i in range(100):
            parts += [pack_header({"op": "ping", "id": i}), msgpack.packb(i)]
        s.send_multipart([SIGNATURE, BATCH_HEADER, pack_batch(parts)])
        replies = _replies(s, 100)
        assert [h for h, _, _ in replies] == [{"op": "ok", "re": i} for i in range(100)]
        assert [msgpack.unpackb(b) for _, b, _ in replies] == list(range(100))
        assert all(batched for _, _, batched in replies) and server.router.batches_out >= 1
    finally:
        s.close(0)
        ctx.term()
        server.close()


# ------------------------------------------------------------------------------ fuzz: what the lane takes
class _Plain:
    def back(self, x):
        return x


class _Replies:
    def __init__(self) -> None:
        self.ok: list = []

    def reply_ok(self, identity, rid, body):
        self.ok.append((rid, body))

    def reply_packed(self, identity, header, body, buffers=()):  # the sync lane's (a header without keep)
        self.sync = True

    def reply_now(self, identity, header, body):  # the sync lane's plain ok, sent at once
        self.sync = True

    def reply(self, identity, header, body, buffers):  # the lane's own answers are ok by template only
        raise AssertionError(f"unexpected reply {header}")


@pytest.fixture(scope="module")
def lane_kit():
    import types

    from mesh.server._checks import check_header
    from mesh.server._classes import ClassResolver
    from mesh.server._dispatch import Servicer
    from mesh.server._mailbox import Actor
    from mesh.server._store import LocalPool

    s = Servicer(name="fuzz", capacity=1, pool=LocalPool(), resolver=ClassResolver(), max_message_size=2**20,
                 on_stop=lambda: None)
    s.calls.node = types.SimpleNamespace(io_ident=threading.get_ident(), hand_off_io=lambda ident: False)
    actor = Actor("o1", "_Plain", None)
    actor.obj, actor.running = _Plain(), 0
    s.objects.actors["o1"] = actor
    s.calls.inline._hist[(_Plain, "back")] = [100, 1e-6, False]
    from mesh.server._inline_fast import FastLane

    fast = FastLane(s)  # the ROUTER's handler: it sends kept calls to the lane
    delegated: list = []
    fast.slow = fast.kept.__self__.slow = lambda router, identity, header, body, buffers: delegated.append(header)
    yield s, fast, actor, delegated, check_header
    s.close(0)


def _strategies():
    """A plain kept call's header (optional chain, sess), then 0-3 mutations: a key dropped, a
    value replaced by anything, an unknown key added."""
    from hypothesis import strategies as st

    leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=140) | st.binary(max_size=4)
    base = st.fixed_dictionaries(
        {"op": st.just("call"), "obj": st.just("o1"), "m": st.just("back"), "keep": st.sampled_from([1, True]),
         "id": st.integers(0, 2**64 - 1), "task": st.text(max_size=128)},
        optional={"chain": st.text(max_size=128), "sess": st.text(max_size=128)})
    keys = st.sampled_from(["op", "obj", "m", "keep", "id", "task", "chain", "sess", "dl", "stream", "zz"])
    mutation = st.tuples(st.sampled_from(["drop", "set"]), keys, leaf | st.sampled_from([0, 2, 1.0, "x" * 129]))

    def mutate(args):
        header, changes = args
        header = dict(header)
        for what, key, v in changes:
            if what == "drop":
                header.pop(key, None)
            else:
                header[key] = v
        return header

    return st.tuples(base, st.lists(mutation, max_size=3)).map(mutate)


def test_the_lane_takes_only_plain_kept_calls_and_answers_them_exactly(lane_kit):
    from hypothesis import HealthCheck, given, settings

    s, lane, actor, delegated, check_header = lane_kit
    taken = []

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(_strategies(), st_values())
    def run(header, x):
        router = _Replies()
        delegated.clear()
        body = msgpack.packb([[x], {}])
        size = len(s.pool)
        lane.handle(router, b"peer", header, body, [])
        assert actor.running == 0  # never left admitted
        if getattr(router, "sync", False):  # no keep: a plain sync call, the sync lane's
            assert "keep" not in header and not router.ok
            return
        if delegated:
            assert delegated == [header] and not router.ok and len(s.pool) == size  # untouched
            return
        # taken: exactly a plain kept call, which the general check accepts too
        assert set(header) <= {"op", "obj", "m", "id", "task", "keep", "chain", "sess"}
        assert header["op"] == "call" and header["keep"] == 1 and type(header["id"]) is int
        assert check_header(header) is None
        assert router.ok == [(header["id"], msgpack.packb(x))]
        entry = s.pool.get(header["task"])
        assert entry is not None and msgpack.unpackb(entry[1]) == x
        taken.append(header)

    run()
    assert len(taken) > 5  # (the strategies lean to plain kept calls)


def st_values():
    from hypothesis import strategies as st

    return st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20)


# ------------------------------------------------------------------------------ the inline policy's fixes
def test_the_inline_policy_warms_up_on_the_fastest_run():
    from mesh.server._inline import WARMUP, InlinePolicy

    policy = InlinePolicy(50e-6)
    policy.record(_Plain, "back", 0.01)  # a cold first run (10 ms) no longer keeps it off for dozens of runs
    for _ in range(WARMUP - 1):
        policy.record(_Plain, "back", 2e-6)
    assert policy.allows(_Plain, "back")
    policy.record(_Plain, "back", 0.01)  # past the warm-up a slow run counts as before
    assert not policy.allows(_Plain, "back")


def test_the_watchdog_end_of_a_retired_thread_leaves_its_successors_call_watched():
    from mesh.server._inline import Watchdog

    dog = Watchdog(lambda ident: False)
    dog.begin(2)  # the successor I/O thread's inline call
    dog.end(1)  # a call that was handed off ends on its old thread
    assert dog.current is not None and dog.current[1] == 2
    dog.end(2)
    assert dog.current is None
