"""The sync call fast lanes (issue 16 target 1): client (mesh.client._client.Client.sync_call) and
server (mesh.server._inline_fast.FastLane) give what the general path gives, and step aside for
whatever they do not cover (deadlines, async calls in flight, odd headers, non-plain values)."""

from __future__ import annotations

import os
import signal
import threading
import time

import msgpack
import pytest
import zmq

import mesh
import transport
from mesh import RpcMeta, async_func
from mesh.client import _client as client_mod
from mesh.server import _inline_fast
from tests.conftest import wait_until


class Kit(metaclass=RpcMeta):
    def __init__(self) -> None:
        self.items: list = []

    def echo(self, *args, **kwargs):
        return args[0] if len(args) == 1 and not kwargs else [list(args), kwargs]

    def add(self, x):
        self.items.append(x)
        return len(self.items)

    @async_func
    def add_async(self, x):
        return self.add(x)

    def read(self) -> list:
        return self.items

    def check(self, msg: str) -> str:
        if msg != "ok":
            raise ValueError(msg)
        return msg

    def big(self) -> int:
        return 2**70

    def surrogate(self) -> str:
        return "\ud800"

    def where(self) -> str:
        return threading.current_thread().name

    def nap(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    def call_other(self, other, x):
        if other is None:  # short: becomes inline, then the calls below wait inside the fast lane
            return x
        return other.echo(x)  # a nested sync call from a server thread (the client's general lane)


class Counted:
    """Counts the fast lanes' runs (the server's FastLane._run, the client's sync_call answers)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.server = 0
        self.client = 0
        self.client_slow = 0
        run, call = _inline_fast.FastLane._run, client_mod.Client.sync_call

        def counted_run(lane, *args, **kwargs):
            self.server += 1
            return run(lane, *args, **kwargs)

        def counted_call(client, *args, **kwargs):
            value = call(client, *args, **kwargs)
            if value is client_mod.SLOW:
                self.client_slow += 1
            else:
                self.client += 1
            return value

        monkeypatch.setattr(_inline_fast.FastLane, "_run", counted_run)
        monkeypatch.setattr(client_mod.Client, "sync_call", counted_call)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Counted:
    return Counted(monkeypatch)


@pytest.fixture
def kit_server(counted: Counted):
    srv = mesh.AgentServer(port=0, capacity=8, advertise=False).launch(in_subprocess=False)
    try:
        yield srv
    finally:
        srv.shutdown()


def _warm(srv, cls: type, method: str, call) -> None:
    policy = srv._host.servicer.calls.inline
    for _ in range(2000):
        call()
        if policy.allows(cls, method):
            return
    raise AssertionError(f"{cls.__name__}.{method} never became short: {policy.snapshot()}")


def test_templates_pack_as_msgpack_does() -> None:
    for n in (0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63):
        assert transport.pack_uint(n) == msgpack.packb(n)
        assert transport.ok_header(n) == msgpack.packb({"op": "ok", "re": n})
    for s in ("", "a", "x" * 31, "x" * 32, "é" * 20, "abc.123", "x" * 70000):
        assert transport.pack_str(s) == msgpack.packb(s)
    head = transport.map_prefix(3, [("op", "call"), ("obj", "o.1")]) + transport.pack_str("id") + transport.pack_uint(7)
    assert msgpack.unpackb(head) == {"op": "call", "obj": "o.1", "id": 7}
    with pytest.raises(ValueError):
        transport.map_prefix(16, [])
    for v in ("hello", 7, -3, 2**64 - 1, 1.5, True, None, b"\x00" * 40, [["a", 1], {"k": b"v"}], (("x",), {})):
        assert transport.pack_plain(v) == msgpack.packb(v, use_bin_type=True)
    with pytest.raises(UnicodeEncodeError):
        transport.pack_plain(["\ud800"])
    assert transport.pack_plain("after an error") == msgpack.packb("after an error")  # the packer still works


def _fast(counted: Counted, call):
    """``call()`` until it ran in both fast lanes (a slow run on a loaded machine may send a method
    back to workers for a while: its history decides); its value."""
    for _ in range(500):
        server, client = counted.server, counted.client
        value = call()
        if counted.server > server and counted.client > client:
            return value
    raise AssertionError("never took the fast lanes")


def test_plain_calls_take_both_lanes_and_give_what_the_general_path_gives(kit_server, counted: Counted) -> None:
    k = Kit(to_dist={"host": kit_server.host, "port": kit_server.port})
    _warm(kit_server, Kit, "echo", lambda: k.echo("w"))
    assert _fast(counted, lambda: k.echo("hello")) == "hello"
    assert _fast(counted, lambda: k.echo(1, 2.5, None, True, b"xy", key="v")) == [[1, 2.5, None, True, b"xy"], {"key": "v"}]
    assert _fast(counted, lambda: k.echo(-(2**63))) == -(2**63)
    assert _fast(counted, lambda: k.echo(2**64 - 1)) == 2**64 - 1
    # values the lanes leave to the codec: a tuple, a nested list, a big int, big bytes
    assert k.echo((1, 2)) == (1, 2)
    assert k.echo([1, [2, (3,)]]) == [1, [2, (3,)]]
    assert k.echo(2**70) == 2**70
    assert k.echo(b"z" * 70000) == b"z" * 70000
    assert k.big() == 2**70  # a result the fast lane's packing leaves to the codec
    assert k.echo({1: "a"}) == {1: "a"}


def test_errors_from_the_fast_lane_are_the_general_path_errors(kit_server, counted: Counted) -> None:
    k = Kit(to_dist={"host": kit_server.host, "port": kit_server.port})
    _warm(kit_server, Kit, "check", lambda: k.check("ok"))
    for _ in range(500):  # until one error came through the server's fast lane (see _fast)
        before = counted.server
        with pytest.raises(ValueError) as err:
            k.check("boom")
        assert isinstance(err.value, mesh.RemoteError) and "boom" in str(err.value)
        if counted.server > before:
            break
        k.check("ok")
    assert counted.server > before
    with pytest.raises(mesh.RemoteAttributeError):
        k.nope()
    rows = {(r["class"], r["method"]): r for r in kit_server._host.servicer.calls.stats.snapshot()}
    assert rows[("Kit", "check")]["errors"].get("ValueError", 0) >= 1  # stats counted the fast-lane calls
    assert rows[("Kit", "check")]["calls"] >= 5


def test_order_with_async_calls_in_flight_and_deadlines_take_the_general_lane(kit_server, counted: Counted) -> None:
    k = Kit(to_dist={"host": kit_server.host, "port": kit_server.port})
    _warm(kit_server, Kit, "add", lambda: k.add(0))
    start = len(k.read())
    futures = [k.add_async(i) for i in range(200)]
    n = k.add("sync")  # behind the 200 async calls of this caller: general lane, same order
    assert [f.result(10) for f in futures] == list(range(start + 1, start + 201))
    assert n == start + 201
    assert k.read()[start:] == list(range(200)) + ["sync"]
    slow = counted.client_slow
    with mesh.deadline(5):
        assert k.add("dl") == start + 202  # a deadline: the general lane, with a task id
    assert counted.client_slow == slow  # (decided before the client's fast lane: not even tried)


def test_nested_calls_and_reentrancy_through_the_fast_lane(kit_server, counted: Counted) -> None:
    where = {"host": kit_server.host, "port": kit_server.port}
    a, b = Kit(to_dist=where), Kit(to_dist=where)
    _warm(kit_server, Kit, "call_other", lambda: a.call_other(None, 1))  # allowed now; nothing else runs it
    before = counted.server
    assert a.call_other(b, "x") == "x"  # A waits on B inside the call: the loop is handed off, still answered
    assert counted.server > before  # it ran in the fast lane until it waited
    assert a.call_other(a, "self") == "self"  # A -> A on the same chain: re-enters (on a worker now)
    assert not kit_server._host.servicer.calls.inline.allows(Kit, "call_other")  # it waited: never inline again
    assert b.echo("after") == "after"  # the server goes on serving


def test_headers_the_fast_lane_does_not_take_get_the_general_answers(kit_server, counted: Counted) -> None:
    k = Kit(to_dist={"host": kit_server.host, "port": kit_server.port})
    _warm(kit_server, Kit, "echo", lambda: k.echo("w"))
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(kit_server.address)
    try:
        def ask(header: dict, body: bytes = msgpack.packb([["v"], {}])) -> dict:
            sock.send_multipart([transport.SIGNATURE, msgpack.packb(header), body])
            assert sock.poll(10_000)
            frames = sock.recv_multipart()
            return {**msgpack.unpackb(frames[1]), "value": msgpack.unpackb(frames[2]) if frames[2] != b"\xc0" else None}

        base = {"op": "call", "obj": k._mesh_id, "m": "echo", "id": 1}
        assert ask(base)["value"] == "v"  # no chain, no session: the fast lane
        assert ask({**base, "id": 2, "extra": 1})["value"] == "v"  # an unknown key: the general path
        assert ask({**base, "id": 3, "chain": 5})["kind"] == "badrequest"
        assert ask({**base, "id": 4, "sess": "s" * 200})["kind"] == "badrequest"
        assert ask({**base, "id": 5, "m": "x" * 300})["kind"] == "badrequest"
        assert ask({**base, "id": 6, "obj": "nope"})["kind"] == "notfound"
        assert ask({**base, "id": 7, "m": "_private"})["op"] == "err"
        assert ask({**base, "id": 8}, b"\xc1")["op"] == "err"  # a body that does not decode
        assert ask({**base, "id": "9"})["kind"] == "badrequest"
        assert k.echo("still") == "still"
    finally:
        sock.close(0)


def test_inline_off_and_a_busy_actor_use_the_general_lanes(monkeypatch: pytest.MonkeyPatch, counted: Counted) -> None:
    monkeypatch.setenv("MESH_INLINE_US", "0")
    srv = mesh.AgentServer(port=0, capacity=8, advertise=False).launch(in_subprocess=False)
    try:
        k = Kit(to_dist={"host": srv.host, "port": srv.port})
        for i in range(20):
            assert k.echo(i) == i
        assert counted.server == 0 and counted.client >= 20  # client lane on, server lane never
    finally:
        srv.shutdown()


def test_fast_lane_over_curve_with_a_subprocess_server(spawn_server, counted: Counted) -> None:
    mesh.init(secret="fast-lane-secret-0123456789")
    srv = spawn_server(port=0, secret="fast-lane-secret-0123456789")
    k = Kit(to_dist={"host": srv.host, "port": srv.port})
    for i in range(50):
        assert k.echo(i) == i
    assert counted.client >= 50
    wait_until(lambda: k.echo("x") == "x")


def test_values_msgpack_cannot_pack_and_big_bodies_get_the_general_errors(counted: Counted) -> None:
    srv = mesh.AgentServer(port=0, capacity=8, advertise=False, max_message_size=100_000).launch(in_subprocess=False)
    try:
        k = Kit(to_dist={"host": srv.host, "port": srv.port})
        _warm(srv, Kit, "surrogate", lambda: pytest.raises(mesh.RemoteError, k.surrogate))
        with pytest.raises(mesh.SerializationError):
            k.echo("\ud800")  # refused before sending, as by the general path
        for _ in range(20):  # through the server's fast lane too (once warm): the codec's error entry
            with pytest.raises(mesh.RemoteError, match="cannot be sent back"):
                k.surrogate()
        with pytest.raises(mesh.MessageTooLarge):
            k.echo("x" * 200_000)  # a plain but big body: the size check still runs
        assert k.echo("ok") == "ok"
    finally:
        srv.shutdown()


def test_a_plain_sync_call_waits_in_recv_not_in_a_poll(spawn_server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's fast lane blocks in ``recv`` on its socket (one poll(2) inside libzmq, as a plain
    pyzmq client): no ``zmq_poll`` over the socket and its monitor while it waits."""
    from transport import _direct

    srv = spawn_server(port=0)
    k = Kit(to_dist={"host": srv.host, "port": srv.port})
    assert k.echo(0) == 0
    polls = []
    real = _direct._poll
    monkeypatch.setattr(_direct, "_poll", lambda items, timeout: polls.append(timeout) or real(items, timeout))
    for i in range(50):  # back to back: each within FRESH of the last reply (no monitor check before sending)
        assert k.echo(i) == i
    # before: one zmq_poll per call at least (the wait); now only the monitor checks before sending
    # that a loaded machine makes when a call comes more than FRESH after the last reply
    assert len(polls) < 25, polls
    before = len(polls)
    assert k.nap(0.6) == 0.6  # a wait of several slices: the monitor is read between them
    assert len(polls) - before >= 2


def test_a_server_lost_while_a_fast_lane_call_waits_fails_it_within_a_slice_or_two(spawn_server) -> None:
    srv = spawn_server(port=0)
    k = Kit(to_dist={"host": srv.host, "port": srv.port})
    assert k.echo("up") == "up"
    threading.Timer(0.3, os.kill, (srv.pid, signal.SIGKILL)).start()
    t = time.monotonic()
    with pytest.raises(mesh.OutcomeUnknown):  # sent, then the connection went: it may have run
        k.nap(30)
    assert time.monotonic() - t < 5.0  # the kill comes at 0.3 s; found at the next slice (0.1 s), loosely


def test_a_loop_that_closed_with_a_call_in_flight_leaves_other_objects_on_the_fast_lane(kit_server, counted: Counted) -> None:
    import asyncio

    class Sleeper(metaclass=RpcMeta):
        async def nap(self, seconds: float) -> float:
            await asyncio.sleep(seconds)
            return seconds

    where = {"host": kit_server.host, "port": kit_server.port}
    s = Sleeper(to_dist=where)

    async def main() -> None:
        async with mesh.deadline(0.2):  # the await ends at the deadline; its call stays in flight on the loop's lane
            await s.nap(30)

    with pytest.raises(mesh.DeadlineExceeded):
        asyncio.run(main())
    k = Kit(to_dist=where)
    _warm(kit_server, Kit, "echo", lambda: k.echo("w"))
    assert _fast(counted, lambda: k.echo("after")) == "after"  # another object: its own fast lane
