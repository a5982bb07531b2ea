"""One-frame messages on the server (synclat6, PROTOCOL.md "One-frame messages"): a request of one
frame is read as the three it stands for; its plain ok reply comes in one frame too, every other
reply in three; a request in three frames is answered in three. A one-frame request that is not
one (a length past its end, no body, parts after it) gets the ``protocol`` error, and the server
serves on; ``received`` counts every byte after the identity."""

from __future__ import annotations

import msgpack
import pytest

import transport
from transport._framing import pack_one, split_one
from tests.test_synclat3_rawlane import Plain, Raw, _head, lane_runs  # noqa: F401 - lane_runs: a fixture


class Dealer(Raw):
    """A bare DEALER sending one-frame and three-frame requests."""

    def parts(self, *parts: bytes) -> list[bytes]:
        self.sock.send_multipart(list(parts))
        return self.sock.recv_multipart()


@pytest.fixture
def kit(server, lane_runs):  # noqa: F811 - the imported fixture
    obj = Plain(to_dist={"host": server.host, "port": server.port})
    dealer = Dealer(server.address)
    try:
        yield obj, dealer, lane_runs
    finally:
        dealer.close()


def _ok_one(reply: list[bytes], rid: int) -> object:
    assert len(reply) == 1, reply
    head, body = split_one(reply[0])
    assert head == transport.ok_header(rid)
    return msgpack.unpackb(body)


def test_a_one_frame_call_is_answered_in_one_frame_by_both_lanes(kit) -> None:
    obj, dealer, runs = kit
    body = msgpack.packb([["hi"], {}])
    for rid in range(1, 2000):  # the first calls run on a worker (three frames back); once warm, inline
        before = len(runs)
        reply = dealer.parts(pack_one(_head(obj._mesh_id, "echo", "c", transport.pack_uint(rid)), body))
        if runs[before:] == [True]:  # served by the raw lane: one frame
            assert _ok_one(reply, rid) == "hi"
            break
        assert (
            reply[0] == transport.SIGNATURE
            and reply[1] == transport.ok_header(rid)
            and msgpack.unpackb(reply[2]) == "hi"
        )
    else:
        raise AssertionError("never served by the raw lane")
    # an id not in its shortest form: the header parsed (FastLane.handle), run inline, one frame back
    before = len(runs)
    assert _ok_one(dealer.parts(pack_one(_head(obj._mesh_id, "echo", "c", b"\xcc\x05"), body)), 5) == "hi"
    assert runs[before:] == [False]
    # three frames on the same connection: three back
    reply = dealer.parts(transport.SIGNATURE, _head(obj._mesh_id, "echo", "c", transport.pack_uint(7)), body)
    assert reply[0] == transport.SIGNATURE and reply[1] == transport.ok_header(7) and msgpack.unpackb(reply[2]) == "hi"
    # an error, and a value that is not plain: three frames
    reply = dealer.parts(
        pack_one(_head(obj._mesh_id, "check", "c", transport.pack_uint(8)), msgpack.packb([["bad"], {}]))
    )
    assert reply[0] == transport.SIGNATURE and msgpack.unpackb(reply[1])["op"] == "err"
    assert msgpack.unpackb(reply[1])["re"] == 8
    reply = dealer.parts(
        pack_one(_head(obj._mesh_id, "echo", "c", transport.pack_uint(9)), msgpack.packb([[[1, 2]], {}]))
    )
    assert reply[0] == transport.SIGNATURE and msgpack.unpackb(reply[1])["re"] == 9
    assert obj.echo("after") == "after"  # the mesh client (one frame) on its own socket


def test_a_one_frame_request_that_is_not_one_is_a_protocol_error(kit) -> None:
    obj, dealer, _ = kit
    head = _head(obj._mesh_id, "echo", "c", transport.pack_uint(3))
    body = msgpack.packb([["hi"], {}])
    good = pack_one(head, body)
    for parts in (
        [transport.SIGNATURE + (len(head) + 50).to_bytes(2, "big") + head + body],  # a length past the end
        [transport.SIGNATURE + len(head + body).to_bytes(2, "big") + head + body],  # no body
        [transport.SIGNATURE + b"\x00"],  # shorter than its own length
        [good, b"extra"],  # parts after a one-frame message
        [b"AMSH\x02" + good[5:]],  # another major version
    ):
        reply = dealer.parts(*parts)
        assert len(reply) == 3 and reply[0] == transport.SIGNATURE, parts
        header = msgpack.unpackb(reply[1])
        assert header["op"] == "err" and header["kind"] == "protocol" and header["re"] is None, (parts, header)
    reply = dealer.parts(good)  # and it serves on (three frames back: a call not run inline)
    assert len(reply) in (1, 3) and (_ok_one(reply, 3) if len(reply) == 1 else msgpack.unpackb(reply[2])) == "hi"


def test_received_counts_a_one_frame_request_whole() -> None:
    seen: list = []

    def handler(router, identity, header, body, buffers):
        seen.append((header, bytes(body), buffers))
        router.reply(identity, {"op": "ok", "re": header["id"]}, b"\xc0")
        return True

    node = transport.Node()
    dealer = None
    try:
        router = node.add_router("127.0.0.1", 0, handler)
        dealer = Dealer(f"tcp://127.0.0.1:{router.port}")
        message = pack_one(msgpack.packb({"op": "call", "obj": "o", "m": "m", "id": 4}), b"\xa1x")
        reply = dealer.parts(message)
        assert reply[0] == transport.SIGNATURE and msgpack.unpackb(reply[1]) == {
            "op": "ok",
            "re": 4,
        }  # (router.reply: three)
        assert seen == [({"op": "call", "obj": "o", "m": "m", "id": 4}, b"\xa1x", [])]
        assert router.received == len(message)
    finally:
        if dealer is not None:
            dealer.close()
        node.close()
