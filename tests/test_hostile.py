"""Hostile input: a server survives whatever arrives on its port and keeps serving."""

from __future__ import annotations

import random

import msgpack
import pytest
import zmq

import mesh
from agents_lib import Store

SIG = b"AMSH\x01"


@pytest.fixture
def target(spawn_server):
    srv = spawn_server(port=0, max_message_size=1_000_000)
    ctx = zmq.Context()
    socks: list[zmq.Socket] = []

    def dealer() -> zmq.Socket:
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        s.connect(srv.address)
        socks.append(s)
        return s

    srv.dealer = dealer  # type: ignore[attr-defined]
    yield srv
    for s in socks:
        s.close(0)
    ctx.term()


def healthy(srv) -> None:
    assert srv._proc.poll() is None, "server died"
    assert Store(to_dist={"host": srv.host, "port": srv.port}).add(1) == 1


def reply(sock: zmq.Socket, timeout_ms: int = 3000) -> dict:
    assert sock.poll(timeout_ms), "no reply"
    frames = sock.recv_multipart()
    assert frames[0] == SIG
    return msgpack.unpackb(frames[1], raw=False)


def test_explicit_errors_for_bad_versions_ops_types_and_ids(target):
    s = target.dealer()
    s.send_multipart([b"AMSH\x09", msgpack.packb({"op": "ping", "id": 1}), b"\xc0"])
    assert reply(s)["kind"] == "protocol"
    s.send_multipart([SIG, msgpack.packb({"op": "launch-missiles", "id": 2}), b"\xc0"])
    assert reply(s) == {"op": "err", "kind": "badrequest", "msg": "unknown op 'launch-missiles'", "re": 2}
    s.send_multipart([SIG, msgpack.packb({"op": "call", "id": 3, "obj": 5, "m": None}), b"\xc0"])
    assert reply(s)["kind"] == "badrequest"
    s.send_multipart([SIG, msgpack.packb({"op": "call", "id": 4, "obj": "nope", "m": "add"}), msgpack.packb([[1], {}])])
    assert reply(s)["kind"] == "notfound"
    s.send_multipart([SIG, msgpack.packb({"op": "result", "id": 5, "task": "never"}), b"\xc0"])
    assert reply(s, timeout_ms=15_000)["kind"] == "expired"  # after the grace for a task not yet arrived
    s.send_multipart([SIG, msgpack.packb({"op": "create", "id": 6, "obj": "o1", "cls": "subprocess:Popen"}), msgpack.packb({"args": [["true"]]})])
    r = reply(s)
    assert r["op"] == "err" and "RpcMeta" in r["msg"]  # never builds arbitrary classes
    s.send_multipart([SIG, msgpack.packb({"op": "create", "id": 7, "obj": "o2", "cls": "os:system"}), msgpack.packb({"args": ["true"]})])
    assert reply(s)["op"] == "err"  # not a class: never called
    healthy(target)


def test_garbage_and_malformed_frames(target):
    s = target.dealer()
    bad = [
        [b""], [b"garbage"], [b"", b"", b""], [SIG], [SIG, b"\xc1", b""],
        [SIG, msgpack.packb([1, 2]), b""], [SIG, msgpack.packb({"op": 1}), b""],
        [SIG, msgpack.packb({"op": "call", "id": 1, "obj": "x", "m": "y"}), b"\x92\x01"],  # truncated body
        [SIG, msgpack.packb({"op": "ping", "id": 1}), b"\x91" * 100_000 + b"\x01"],  # deeply nested body
        [SIG, b"\x91" * 60_000 + b"\x01", b""],  # deeply nested header
        [b"x"] * 1000,  # a thousand frames
    ]
    for frames in bad:
        s.send_multipart(frames)
    healthy(target)


def test_oversized_message_drops_only_that_connection(target):
    s = target.dealer()
    s.send_multipart([SIG, msgpack.packb({"op": "ping", "id": 1}), b"\xc0", b"x" * 2_000_000])
    healthy(target)
    fresh = target.dealer()
    fresh.send_multipart([SIG, msgpack.packb({"op": "ping", "id": 2}), b"\xc0"])
    assert reply(fresh)["op"] == "ok"


def test_seeded_random_messages(target):
    rng = random.Random(1234)
    s = target.dealer()
    ops = ["call", "create", "getattr", "result", "delete", "ping", "status", "release", "lease", "bye", "lookup", "?"]

    def junk(depth: int = 0):
        kind = rng.randrange(8 if depth < 3 else 5)
        if kind == 0:
            return rng.randrange(-2**63, 2**63) if rng.random() < 0.1 else rng.randrange(-1000, 1000)
        if kind == 1:
            return rng.randbytes(rng.randrange(0, 64))
        if kind == 2:
            return "".join(rng.choice("ab_x.:") for _ in range(rng.randrange(0, 12)))
        if kind == 3:
            return None
        if kind == 4:
            return rng.random()
        if kind == 5:
            return [junk(depth + 1) for _ in range(rng.randrange(0, 4))]
        if kind == 6:
            return {str(junk(depth + 1))[:8]: junk(depth + 1) for _ in range(rng.randrange(0, 4))}
        return msgpack.ExtType(rng.randrange(0, 5), rng.randbytes(rng.randrange(0, 16)))

    for i in range(2000):
        header = {"op": rng.choice(ops), "id": i}
        for key in rng.sample(["obj", "m", "cls", "task", "tasks", "keep", "chain", "sess", "name", "detached"], rng.randrange(0, 5)):
            header[key] = junk()
        frames = [SIG if rng.random() < 0.9 else rng.randbytes(5), msgpack.packb(header, use_bin_type=True)]
        body = junk()
        try:
            frames.append(msgpack.packb(body, use_bin_type=True) if rng.random() < 0.8 else rng.randbytes(rng.randrange(0, 40)))
        except Exception:
            frames.append(b"\xc0")
        frames += [rng.randbytes(rng.randrange(0, 100)) for _ in range(rng.randrange(0, 3))]
        s.send_multipart(frames)
    # every message with a readable id gets an answer or is one-way; the server lives and serves
    healthy(target)
    status = mesh.client._replies.decode_reply(
        mesh.client._client.get_client().request(target.address, {"op": "status"}, None, timeout=5).result(10), target.address)
    assert status["name"]
