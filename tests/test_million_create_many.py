"""Issue 16, target 4: op ``create_many`` (1.4), pipelined creations many to a request.

The server side takes only well-formed batches (hostile input is refused whole, the server
lives); the client falls back to ``create``s for a server that does not know the op; errors of
one object of a batch show at that object's first use, as for a pipelined ``create``.
"""

from __future__ import annotations

import random
import threading

import msgpack
import pytest
import zmq

import mesh
from agents_lib import Store
from mesh import _create_many
from mesh._core import wire

SIG = b"AMSH\x01"


class Counter(metaclass=mesh.RpcMeta):
    def __init__(self, start: int, *, step: int = 1) -> None:
        if start < 0:
            raise ValueError("start must be 0 or more")
        self.n = start
        self.step = step

    def bump(self) -> int:
        self.n += self.step
        return self.n


def on(srv):
    return {"host": srv.host, "port": srv.port}


@pytest.fixture
def raw(spawn_server):
    srv = spawn_server(port=0, max_message_size=1_000_000)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(srv.address)
    yield srv, sock
    sock.close(0)
    ctx.term()


def _ask(sock, header, body) -> tuple[dict, bytes]:
    sock.send_multipart([SIG, msgpack.packb(header, use_bin_type=True), body])
    assert sock.poll(5000), "no reply"
    frames = sock.recv_multipart()
    return msgpack.unpackb(frames[1], raw=False), frames[2]


def _healthy(srv) -> None:
    assert srv._proc.poll() is None, "server died"
    assert Store(to_dist=on(srv)).add(1) == 1


def test_a_raw_batch_is_answered_once_with_each_objects_outcome(raw):
    srv, sock = raw
    item = lambda *a: msgpack.packb({"args": list(a), "kwargs": {}}, use_bin_type=True)  # noqa: E731
    header = {"op": "create_many", "id": 1, "objs": ["o1", "o2", "o3"], "cls": "agents_lib:Store"}
    reply, body = _ask(sock, header, msgpack.packb({"items": [item(), item(1, 2), item()]}, use_bin_type=True))
    assert reply["op"] == "ok" and reply["re"] == 1
    value = msgpack.unpackb(body, raw=False)
    assert value["items"][0] == 0 and value["items"][2] == 0
    err_header = value["items"][1][0]
    assert err_header["op"] == "err" and err_header["kind"] == "remote" and err_header["type"] == "TypeError"
    assert "inst" in value["info"] and "lease_ttl" in value["info"]
    # the same ids again: those that exist are refused, the one whose constructor raised is made now
    reply, body = _ask(sock, {**header, "id": 2}, msgpack.packb({"items": [item(), item(), item()]}, use_bin_type=True))
    items = msgpack.unpackb(body, raw=False)["items"]
    assert items[0][0]["kind"] == "badrequest" and items[1] == 0 and items[2][0]["kind"] == "badrequest"
    _healthy(srv)


@pytest.mark.parametrize("header, body", [
    ({"objs": [], "cls": "agents_lib:Store"}, {"items": []}),
    ({"objs": "o1", "cls": "agents_lib:Store"}, {"items": [b""]}),
    ({"objs": ["x" * 200], "cls": "agents_lib:Store"}, {"items": [b"\xc0"]}),
    ({"objs": ["a", "b"], "cls": "agents_lib:Store"}, {"items": [b"\x80"]}),
    ({"objs": ["a"], "cls": "agents_lib:Store"}, {"items": ["not bytes"]}),
    ({"objs": ["a"], "cls": "agents_lib:Store"}, [1, 2]),
    ({"objs": ["a"]}, {"items": [b"\x80"]}),
    ({"objs": ["a"] * 5000, "cls": "agents_lib:Store"}, {"items": [b"\x80"] * 5000}),
])
def test_a_malformed_batch_is_refused_whole(raw, header, body):
    srv, sock = raw
    reply, _ = _ask(sock, {"op": "create_many", "id": 9, **header}, msgpack.packb(body, use_bin_type=True))
    assert reply["op"] == "err" and reply["kind"] == "badrequest"
    assert "a" not in [a["id"] for a in mesh.client._replies.decode_reply(
        mesh.client._client.get_client().request(srv.address, {"op": "status"}, None, timeout=5).result(10),
        srv.address)["agents"]]
    _healthy(srv)


def test_seeded_random_batches(raw):
    srv, sock = raw
    rng = random.Random(16)

    def junk(depth: int = 0):
        kind = rng.randrange(7 if depth < 2 else 4)
        if kind == 0:
            return rng.randrange(-1000, 1000)
        if kind == 1:
            return rng.randbytes(rng.randrange(0, 24))
        if kind == 2:
            return "".join(rng.choice("ab:_.") for _ in range(rng.randrange(0, 10)))
        if kind == 3:
            return None
        if kind == 4:
            return [junk(depth + 1) for _ in range(rng.randrange(0, 4))]
        if kind == 5:
            return {rng.choice(["items", "blob", "py", "x"]): junk(depth + 1) for _ in range(rng.randrange(0, 3))}
        return msgpack.ExtType(rng.randrange(0, 5), rng.randbytes(rng.randrange(0, 12)))

    for i in range(600):
        n = rng.randrange(1, 4)
        header = {"op": "create_many", "id": i, "cls": rng.choice(["agents_lib:Store", "os:system", junk()]),
                  "objs": [f"r{i}.{k}" for k in range(n)] if rng.random() < 0.7 else junk()}
        if rng.random() < 0.2:
            header["detached"] = junk()
        if rng.random() < 0.6:
            items = [rng.choice([msgpack.packb({"args": [], "kwargs": {}}), rng.randbytes(8),
                                 msgpack.packb(junk(), use_bin_type=True)]) for _ in range(n)]
            body = {"items": items, **({"blob": junk()} if rng.random() < 0.2 else {})}
        else:
            body = junk()
        try:
            packed = msgpack.packb(body, use_bin_type=True)
        except Exception:  # noqa: BLE001
            packed = b"\xc0"
        sock.send_multipart([SIG, msgpack.packb(header, use_bin_type=True), packed])
    answered = 0
    while sock.poll(3000):
        sock.recv_multipart()
        answered += 1
        if answered == 600:
            break
    assert answered == 600  # every request is answered, once
    _healthy(srv)


def test_pipelined_creations_go_many_to_a_request(spawn_server):
    srv = spawn_server(port=0)
    counters = [Counter(i, to_dist=on(srv)) for i in range(600)]
    assert [c.bump() for c in counters[:: 50]] == [i + 1 for i in range(0, 600, 50)]
    assert srv.address not in _create_many.old


def test_an_error_of_one_object_of_a_batch_shows_at_its_first_use(spawn_server):
    srv = spawn_server(port=0)
    Counter(0, to_dist=on(srv)).bump()  # proves the class there (its first use): later ones are batched
    made = [Counter(i if i != 3 else -1, step=2, to_dist=on(srv)) for i in range(8)]
    with pytest.raises(ValueError, match="start must be 0 or more") as info:
        made[3].bump()
    assert "failed (to_dist() returned before the server answered" in str(info.value)
    assert [m.bump() for i, m in enumerate(made) if i != 3] == [i + 2 for i in range(8) if i != 3]


def test_a_server_without_create_many_gets_creates(spawn_server, monkeypatch):
    srv = spawn_server(port=0)
    monkeypatch.setattr(wire, "CREATE_MANY", "create_many_unknown")  # what a 1.3 server sees: an unknown op
    Counter(0, to_dist=on(srv)).bump()
    made = [Counter(i, to_dist=on(srv)) for i in range(40)]
    assert [m.bump() for m in made] == [i + 1 for i in range(40)]
    assert srv.address in _create_many.old


def test_a_class_sent_by_value_is_batched_and_falls_back_too(spawn_server, monkeypatch):
    srv = spawn_server(port=0)

    class Local(metaclass=mesh.RpcMeta):  # not importable there: sent by value
        def __init__(self, k: int) -> None:
            self.k = k

        def get(self) -> int:
            return self.k

    made = [Local(i, to_dist=on(srv)) for i in range(30)]
    assert [m.get() for m in made] == list(range(30))
    monkeypatch.setattr(wire, "CREATE_MANY", "create_many_unknown")
    more = [Local(i, to_dist=on(srv)) for i in range(30, 60)]
    assert [m.get() for m in more] == list(range(30, 60))
    assert srv.address in _create_many.old


def test_shutdown_forgets_old_servers(spawn_server, monkeypatch):
    srv = spawn_server(port=0)
    _create_many.old.add(srv.address)
    mesh.shutdown()
    assert srv.address not in _create_many.old


class Gated(metaclass=mesh.RpcMeta):
    """Its constructor waits until ``path`` exists (at most 30 s): a batch that cannot be answered yet."""

    def __init__(self, path: str, k: int = 0) -> None:
        import os
        import time

        deadline = time.monotonic() + 30
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.k = k

    def get(self) -> int:
        return self.k


def test_a_batchs_proxies_share_one_waiter_then_become_plain_proxies(spawn_server, tmp_path):
    from mesh import _pipeline
    from mesh.client._client import get_client
    from mesh.client._proxy import RpcObject

    srv = spawn_server(port=0, capacity=4)
    gate = tmp_path / "open"
    gate.touch()
    Gated(str(gate), to_dist=on(srv)).get()  # proves the class there (its first use): later ones are batched
    gate.unlink()
    held = threading.Event()
    get_client().node.call_soon(lambda: held.wait(10))  # the I/O thread sends nothing until set
    made = [Gated(str(gate), i, to_dist=on(srv)) for i in range(5)]
    waiters = {id(m._mesh_inst) for m in made}
    held.set()
    assert len(waiters) == 1  # one waiter for the batch, no future or entry per object
    assert type(made[0]._mesh_inst) is _create_many.Waiter
    assert _pipeline.pending() == 5
    gate.touch()
    assert [m.get() for m in made] == list(range(5))  # first use waits for the batch's reply
    assert _pipeline.pending() == 0
    assert all(type(m) is RpcObject for m in made)
    insts = {id(m._mesh_inst) for m in made}
    assert len(insts) == 1 and type(made[0]._mesh_inst) is str  # the server's run, one shared string


def test_a_batch_refused_whole_fails_each_object_at_its_first_use(spawn_server, monkeypatch):
    srv = spawn_server(port=0)
    Counter(0, to_dist=on(srv)).bump()
    real = _create_many._send

    def bad(batch):  # one id more than items: the server refuses the whole batch (badrequest)
        batch.ids.append(batch.ids[0])
        real(batch)

    monkeypatch.setattr(_create_many, "_send", bad)
    made = [Counter(i, to_dist=on(srv)) for i in range(6)]
    for m in made:
        with pytest.raises(mesh.MeshError, match="malformed create_many request") as info:
            m.bump()
        assert "failed (to_dist() returned before the server answered" in str(info.value)
    monkeypatch.setattr(_create_many, "_send", real)
    assert srv.address not in _create_many.old  # refused, not unknown: batches go on
    again = [Counter(i, to_dist=on(srv)) for i in range(6)]
    assert [m.bump() for m in again] == [i + 1 for i in range(6)]
    _healthy(srv)
