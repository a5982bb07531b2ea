"""The server's raw sync lane (FastLane.raw, the ROUTER's raw hook): a request whose header bytes
have a known layout is served from them, with the bytes, errors, stats and order the general path
gives; anything else (odd ids, odd keys, truncated headers) goes the usual way."""

from __future__ import annotations

import threading

import msgpack
import pytest
import zmq

import transport
from mesh import RpcMeta
from mesh.server import _inline_fast
from mesh.server._mailbox import Actor
from mesh.server._stats import CallStats
from tests.conftest import wait_until


class Plain(metaclass=RpcMeta):
    def __init__(self) -> None:
        self.n = 0

    def echo(self, x):
        return x

    def bump(self):
        self.n += 1
        return self.n

    def check(self, msg):
        if msg != "ok":
            raise ValueError(msg)
        return msg

    def _hidden(self):
        return "never"


class Raw:
    """A bare DEALER speaking the mesh wire protocol with headers of exact bytes."""

    def __init__(self, address: str) -> None:
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.rcvtimeo = 10000
        self.sock.connect(address)

    def send(self, head: bytes, body: bytes) -> list[bytes]:
        self.sock.send_multipart([transport.SIGNATURE, head, body])
        return self.sock.recv_multipart()

    def close(self) -> None:
        self.sock.close(0)


def _head(obj: str, method: str, chain: str, rid_bytes: bytes, sess: str | None = None) -> bytes:
    fixed = [("op", "call"), ("obj", obj), ("m", method)] + ([("sess", sess)] if sess else [])
    return transport.map_prefix(len(fixed) + 2, fixed) + transport.pack_str("chain") + transport.pack_str(chain) \
        + b"\xa2id" + rid_bytes


@pytest.fixture
def lane_runs(monkeypatch: pytest.MonkeyPatch) -> list:
    """(head given?) per FastLane._run: True for a run started by the raw lane."""
    runs: list = []
    run = _inline_fast.FastLane._run

    def counted(lane, *args, **kwargs):
        runs.append((len(args) > 9 and args[9] is not None) or kwargs.get("head") is not None)
        return run(lane, *args, **kwargs)

    monkeypatch.setattr(_inline_fast.FastLane, "_run", counted)
    return runs


@pytest.fixture
def kit(server, lane_runs):
    obj = Plain(to_dist={"host": server.host, "port": server.port})
    raw = Raw(server.address)
    try:
        yield server, obj, raw, lane_runs
    finally:
        raw.close()


def _warm(server, raw: Raw, obj_id: str, method: str, body: bytes, runs: list) -> None:
    """Calls until one was served by the raw lane (a method runs inline after its warm-up)."""
    for _ in range(2000):
        before = len(runs)
        reply = raw.send(_head(obj_id, method, "warm", transport.pack_uint(1)), body)
        assert msgpack.unpackb(reply[1])["re"] == 1
        if len(runs) > before and runs[-1]:
            return
    raise AssertionError(f"never served by the raw lane: {server._host.servicer.calls.inline.snapshot()}")


def test_every_id_width_is_answered_with_the_exact_ok_header(kit) -> None:
    server, obj, raw, runs = kit
    body = msgpack.packb([["hi"], {}])
    _warm(server, raw, obj._mesh_id, "echo", body, runs)
    for rid in (0, 5, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1):
        before = len(runs)
        reply = raw.send(_head(obj._mesh_id, "echo", "c1", transport.pack_uint(rid)), body)
        assert reply[0] == transport.SIGNATURE and reply[1] == transport.ok_header(rid)
        assert msgpack.unpackb(reply[2]) == "hi"
        assert runs[before:] == [True], rid  # the raw lane, once
    # not the shortest form of the id: the general path (its reply's "re" is the canonical one)
    for rid_bytes, rid in ((b"\xcc\x05", 5), (b"\xcd\x00\x80", 128), (b"\xce\x00\x00\xff\xff", 65535)):
        before = len(runs)
        reply = raw.send(_head(obj._mesh_id, "echo", "c2", rid_bytes), body)
        assert reply[1] == transport.ok_header(rid) and msgpack.unpackb(reply[2]) == "hi"
        assert True not in runs[before:]


def test_odd_layouts_take_the_usual_path_and_keep_their_answers(kit) -> None:
    server, obj, raw, runs = kit
    body = msgpack.packb([["x"], {}])
    _warm(server, raw, obj._mesh_id, "echo", body, runs)
    good = _head(obj._mesh_id, "echo", "c", b"\x07")
    cut = good[:good.index(b"\xa5chain") + 6]
    before = len(runs)
    # truncated right after the chain key, a chain over ID_MAX (not a fixstr), a bad UTF-8 chain
    for head in (cut, cut + b"\xd9\xc8" + b"a" * 200 + b"\xa2id\x07", cut + b"\xa2\xff\xfe\xa2id\x07"):
        reply = raw.send(head, body)
        assert msgpack.unpackb(reply[1])["op"] == "err"
    # a chain of 31 bytes is still the lane's; 32 is not a fixstr (the usual path, same answer)
    for chain in ("c" * 31, "c" * 32):
        reply = raw.send(_head(obj._mesh_id, "echo", chain, b"\x09"), body)
        assert reply[1] == transport.ok_header(9) and msgpack.unpackb(reply[2]) == "x"
    assert runs[before:].count(True) == 1  # only the 31-byte chain
    # an extra key after the id: not a plain sync call's layout
    extra = transport.map_prefix(6, [("op", "call"), ("obj", obj._mesh_id), ("m", "echo")]) + b"\xa5chain\xa1c\xa2id\x08" \
        + b"\xa2dl" + msgpack.packb(5.0)
    reply = raw.send(extra, body)
    assert msgpack.unpackb(reply[1])["re"] == 8 and msgpack.unpackb(reply[2]) == "x"
    # a session key, and an unknown object: the general answers
    reply = raw.send(_head(obj._mesh_id, "echo", "c", b"\x0a", sess="s-1"), body)
    assert reply[1] == transport.ok_header(10)
    reply = raw.send(_head("no-such-object", "echo", "c", b"\x0b"), body)
    assert msgpack.unpackb(reply[1])["kind"] == "notfound"


def test_errors_private_methods_stats_and_order_through_the_raw_lane(kit) -> None:
    server, obj, raw, runs = kit
    _warm(server, raw, obj._mesh_id, "check", msgpack.packb([["ok"], {}]), runs)
    before = len(runs)
    reply = raw.send(_head(obj._mesh_id, "check", "e", b"\x21"), msgpack.packb([["boom"], {}]))
    header = msgpack.unpackb(reply[1])
    assert header["op"] == "err" and header["re"] == 0x21 and header.get("type") == "ValueError"
    assert runs[before:] == [True]
    for _ in range(8):  # a private method's header never becomes a template: the general error each time
        reply = raw.send(_head(obj._mesh_id, "_hidden", "p", b"\x22"), msgpack.packb([[], {}]))
        assert msgpack.unpackb(reply[1])["op"] == "err"
    stats = {(r["class"], r["method"]): r for r in server._host.servicer.calls.stats.snapshot()}
    row = stats[("Plain", "check")]
    assert row["errors"].get("ValueError") == 1 and row["calls"] >= 5
    # the raw lane's calls counted by the row it keeps, its order with the mesh client's calls
    n0 = obj.bump()
    _warm(server, raw, obj._mesh_id, "bump", msgpack.packb([[], {}]), runs)
    counts = [msgpack.unpackb(raw.send(_head(obj._mesh_id, "bump", "o", transport.pack_uint(i)), msgpack.packb([[], {}]))[2])
              for i in range(200, 300)]
    assert counts == sorted(counts) and len(set(counts)) == 100 and counts[0] > n0
    last = obj.bump()
    assert last == counts[-1] + 1

    def counted() -> int:
        return {(r["class"], r["method"]): r for r in server._host.servicer.calls.stats.snapshot()}[("Plain", "bump")]["calls"]

    wait_until(lambda: counted() >= last)  # (a call is counted just after its reply)
    assert counted() == last  # every run counted once


def test_idle_admission_is_one_actor_method() -> None:
    actor = Actor("a", "A", None)
    assert not actor.enter_idle()  # its constructor runs
    actor.running = 0
    assert actor.enter_idle() and actor.running == 1
    assert not actor.enter_idle()  # busy: the general path queues
    assert actor.leave_idle() and actor.running == 0
    assert actor.enter_idle()
    actor.running = 2  # a re-entered call runs too
    assert not actor.leave_idle() and actor.running == 2  # unchanged: the caller takes the next
    actor.running = 0
    actor.failed = "gone"
    assert not actor.enter_idle()


def test_a_kept_stats_row_counts_as_record_does() -> None:
    stats = CallStats()
    row = stats.row("C", "m")
    assert stats.row("C", "m") is row
    threads = [threading.Thread(target=lambda: [row.ok(0.0) for _ in range(2000)]) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(2000):
        stats.record("C", "m", 0.0, {"op": "err", "type": "ValueError"})
    for t in threads:
        t.join(10)
    (snap,) = stats.snapshot()
    assert snap["calls"] == 10000 and snap["errors"] == {"ValueError": 2000} and sum(snap["hist"]) == 10000


def test_the_mesh_client_takes_the_raw_lane(server, lane_runs) -> None:
    obj = Plain(to_dist={"host": server.host, "port": server.port})
    for _ in range(2000):
        before = len(lane_runs)
        assert obj.echo("v") == "v"
        if lane_runs[before:] == [True]:
            break
    assert lane_runs[-1] is True
    assert obj.check.remote("ok").result(10) == "ok"  # a kept call: not the raw lane's layout
