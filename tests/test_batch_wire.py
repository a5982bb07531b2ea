"""Batches (protocol 1.4, issue 16 target 2): many small messages in one ZeroMQ message.

The framing (pack / split, one bad item fails only itself), the transport (requests that queue up
go in one batch, a lone one alone; replies come back batched; a peer that does not announce
batches gets single messages; a client that never sent a batch gets single replies), and the mesh
on top (order, errors per call, deadlines, CURVE).
"""

from __future__ import annotations

import threading

import msgpack
import pytest
import zmq

import mesh
import transport
from mesh._core import wire
from transport._framing import (
    BATCH, BATCH_HEADER, BATCH_MAX, BATCH_PROPERTY, SIGNATURE, FrameError, pack_batch, pack_header, split_batch,
)


def _parts(headers: list[dict], body: bytes = b"\xc0") -> list:
    out: list = []
    for h in headers:
        out += [pack_header(h), body]
    return out


# ------------------------------------------------------------------------------ framing
def test_the_wire_names_the_op_the_transport_splits():
    assert wire.BATCH == BATCH and wire.BATCH in wire.OPS and wire.BATCH not in wire.ONE_WAY


@pytest.mark.parametrize("n", [1, 2, 15, 16, 17, 300, BATCH_MAX])
def test_a_batch_round_trips_in_order(n):
    headers = [{"op": "call", "id": i, "m": "x" * (i % 300)} for i in range(n)]
    bodies = [bytes([i % 256]) * (i * 37 % 70_000) for i in range(n)]
    parts: list = []
    for h, b in zip(headers, bodies, strict=True):
        parts += [pack_header(h), b]
    items = split_batch(pack_batch(parts))
    assert [item[0] for item in items] == headers
    assert [item[1] for item in items] == bodies


def test_a_bad_item_fails_only_itself():
    body = msgpack.packb([{"op": 1}, b"", {"op": "ok", "re": 1}, "not a bin", {"op": BATCH}, b"",
                          [1, 2], b"", {"op": "ok", "re": 2}, b"\xc0"])
    items = split_batch(body)
    assert [type(i) for i in items] == [FrameError, FrameError, FrameError, FrameError, tuple]
    assert items[-1] == ({"op": "ok", "re": 2}, b"\xc0")


@pytest.mark.parametrize("body", [
    b"", b"\xc1", msgpack.packb({"op": "x"}), msgpack.packb([{"op": "x"}]),  # not an array of pairs
    msgpack.packb([{"op": "x"}, b""] * (BATCH_MAX + 1)),  # too many
    msgpack.packb([{"op": "x", "v": msgpack.ExtType(1, b"")}, b""]),  # an ext type
    b"\xdd\xff\xff\xff\xff",  # a huge declared length
])
def test_a_malformed_batch_is_refused_whole(body):
    with pytest.raises(FrameError):
        split_batch(body)


# ---------------------------------------------------------------------------- transport
class _Echo:
    """A transport server answering every request with its id, counting the batches it read."""

    def __init__(self) -> None:
        self.node = transport.Node()
        self.seen: list[int] = []
        self.router = self.node.add_router("127.0.0.1", 0, self.handle)
        self.address = f"tcp://127.0.0.1:{self.router.port}"

    def handle(self, router, identity, header, body, buffers):
        if "id" in header:
            self.seen.append(header["id"])
            router.reply(identity, {"op": "ok", "re": header["id"]}, body)

    def close(self) -> None:
        self.node.close()


def test_queued_requests_go_in_batches_and_come_back_in_order():
    server, client = _Echo(), transport.Node()
    try:
        first = client.request(server.address, {"op": "ping", "id": client.next_id()}, b"\xc0", timeout=10)
        first.result(10)  # the connection's handshake announced batches; the reply carried it
        assert server.router.batches_in == 0  # a lone request goes alone
        ids = [client.next_id() for _ in range(3000)]
        futures = [client.request(server.address, {"op": "ping", "id": i}, msgpack.packb(i), timeout=20) for i in ids]
        replies = [f.result(20) for f in futures]
        assert [r[0]["re"] for r in replies] == ids
        assert [msgpack.unpackb(r[1]) for r in replies] == ids
        assert server.seen[1:] == ids  # served in the order sent
        assert server.router.batches_in > 0 and server.router.batches_in < 3000
        assert server.router.batches_out > 0  # and the replies came back batched
    finally:
        client.close()
        server.close()


def test_a_lone_request_is_answered_without_waiting_for_company():
    server, client = _Echo(), transport.Node()
    try:
        for _ in range(20):  # one at a time: each goes at once, alone, and is answered alone
            client.request(server.address, {"op": "ping", "id": client.next_id()}, b"\xc0", timeout=5).result(5)
        assert server.router.batches_in == 0 and server.router.batches_out == 0
    finally:
        client.close()
        server.close()


def test_requests_with_buffer_frames_keep_their_place_between_batched_ones():
    server, client = _Echo(), transport.Node()
    try:
        client.request(server.address, {"op": "ping", "id": client.next_id()}, b"\xc0", timeout=10).result(10)
        ids = [client.next_id() for _ in range(600)]
        futures = [client.request(server.address, {"op": "ping", "id": i}, b"\xc0", [b"x" * 70_000] if i % 7 == 0 else (),
                                  timeout=20) for i in ids]
        assert [f.result(20)[0]["re"] for f in futures] == ids
        assert server.seen[1:] == ids
    finally:
        client.close()
        server.close()


def _raw_router(metadata: bytes | None):
    """A ROUTER answering every request: a 1.3 server (no metadata) or one that announces batches."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.sndhwm = 0  # a ROUTER drops what is past its high-water mark: never, here (a loaded machine)
    sock.rcvhwm = 0
    if metadata:
        sock.setsockopt(zmq.METADATA, metadata)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    ops: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if not sock.poll(50):
                continue
            ident, _sig, header, body = sock.recv_multipart()[:4]
            h = msgpack.unpackb(header)
            ops.append(h["op"])
            if h["op"] == BATCH:
                for item in split_batch(body):
                    sock.send_multipart([ident, SIGNATURE, pack_header({"op": "ok", "re": item[0]["id"]}), b"\xc0"])
            else:
                sock.send_multipart([ident, SIGNATURE, pack_header({"op": "ok", "re": h["id"]}), b"\xc0"])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def close() -> None:
        stop.set()
        thread.join(5)
        sock.close(0)
        ctx.term()

    return f"tcp://127.0.0.1:{port}", ops, close


def test_a_peer_that_does_not_announce_batches_gets_single_messages():
    address, ops, close = _raw_router(None)  # as a 1.3 server
    client = transport.Node()
    try:
        client.request(address, {"op": "ping", "id": client.next_id()}, b"\xc0", timeout=10).result(10)
        futures = [client.request(address, {"op": "ping", "id": client.next_id()}, b"\xc0", timeout=20) for _ in range(2000)]
        for f in futures:
            f.result(20)
        assert ops == ["ping"] * 2001
    finally:
        client.close()
        close()


def test_a_peer_that_announces_batches_gets_them():
    address, ops, close = _raw_router(f"{BATCH_PROPERTY}:1048576".encode())
    client = transport.Node()
    try:
        client.request(address, {"op": "ping", "id": client.next_id()}, b"\xc0", timeout=10).result(10)
        futures = [client.request(address, {"op": "ping", "id": client.next_id()}, b"\xc0", timeout=20) for _ in range(2000)]
        for f in futures:
            f.result(20)
        assert BATCH in ops
    finally:
        client.close()
        close()


@pytest.mark.parametrize("announced", [b"garbage", b"12", b"-5"])
def test_a_bad_announcement_means_single_messages(announced):
    address, ops, close = _raw_router(BATCH_PROPERTY.encode() + b":" + announced)
    client = transport.Node()
    try:
        client.request(address, {"op": "ping", "id": client.next_id()}, b"\xc0", timeout=10).result(10)
        futures = [client.request(address, {"op": "ping", "id": client.next_id()}, b"\xc0", timeout=20) for _ in range(500)]
        for f in futures:
            f.result(20)
        assert BATCH not in ops
    finally:
        client.close()
        close()


def _dealer(address: str) -> tuple[zmq.Context, zmq.Socket]:
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.connect(address)
    return ctx, s


def _replies(s: zmq.Socket, want: int, timeout_ms: int = 10_000) -> list[dict]:
    out: list[dict] = []
    while len(out) < want:
        assert s.poll(timeout_ms), f"only {len(out)} of {want} replies"
        frames = s.recv_multipart()
        header = msgpack.unpackb(frames[1])
        if header["op"] == BATCH:
            out += [item[0] | {"_batched": True} for item in split_batch(frames[2])]
        else:
            out.append(header)
    return out


def test_a_hand_made_batch_with_bad_items_is_served_item_by_item():
    server = _Echo()
    ctx, s = _dealer(server.address)
    try:
        body = msgpack.packb([{"op": "ping", "id": 1}, b"\xc0", {"op": 5}, b"", {"op": "ping", "id": 2}, 7,
                              {"op": "ping", "id": 3}, b"\xc0"])
        s.send_multipart([SIGNATURE, BATCH_HEADER, body])
        replies = _replies(s, 4)
        assert sorted(r["re"] for r in replies if r["op"] == "ok") == [1, 3]
        errors = [r for r in replies if r["op"] == "err"]
        assert len(errors) == 2 and all(r["kind"] == "protocol" and r["re"] is None for r in errors)
        s.send_multipart([SIGNATURE, BATCH_HEADER, b"\xc1garbage"])  # malformed whole: one error, still serving
        assert _replies(s, 1)[0]["kind"] == "protocol"
        s.send_multipart([SIGNATURE, pack_header({"op": "ping", "id": 9}), b"\xc0"])
        assert _replies(s, 1)[0]["re"] == 9
    finally:
        s.close(0)
        ctx.term()
        server.close()


def test_a_client_that_never_sent_a_batch_gets_single_replies(server: mesh.AgentServer):
    ctx, s = _dealer(server.address)
    try:
        for i in range(300):
            s.send_multipart([SIGNATURE, pack_header({"op": "ping", "id": i}), b"\xc0"])
        replies = _replies(s, 300)
        assert not any("_batched" in r for r in replies)
        assert sorted(r["re"] for r in replies) == list(range(300))
    finally:
        s.close(0)
        ctx.term()
