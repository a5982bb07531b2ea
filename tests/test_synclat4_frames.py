"""The ROUTER's unrolled read of a request (synclat4): every frame layout still lands where it did.

A plain four-frame request goes to ``Router.raw`` (then the handler if it declines); any other
layout (1, 2 or 5+ frames after the identity, a wrong signature) gets the protocol error or goes
to the handler with its buffers, exactly as before; ``received`` counts every byte after the identity.
"""

from __future__ import annotations

import msgpack
import zmq

import transport
from transport._framing import SIGNATURE, pack_header


def _serve(raw=None):
    seen: list = []

    def handler(router, identity, header, body, buffers):
        seen.append((header, bytes(body), [bytes(b) for b in buffers]))
        router.reply(identity, {"op": "ok", "re": header.get("id")}, b"\xc0")
        return True

    node = transport.Node()
    router = node.add_router("127.0.0.1", 0, handler)
    if raw is not None:
        router.raw = raw
    return node, router, seen


def _exchange(router, frames, timeout_ms=5000):
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(f"tcp://127.0.0.1:{router.port}")
        sock.send_multipart(frames)
        assert sock.poll(timeout_ms), "no reply"
        reply = sock.recv_multipart()
        assert reply[0] == SIGNATURE
        return msgpack.unpackb(reply[1])
    finally:
        sock.close()


def test_every_layout_is_read_whole_and_counted():
    calls: list = []

    def raw(router, identity, header, body):
        calls.append((header, body))
        return None  # leave it to the usual path

    node, router, seen = _serve(raw)
    try:
        header = pack_header({"op": "ping", "id": 7})
        sent = 0
        # one frame after the identity: too short
        reply = _exchange(router, [SIGNATURE])
        sent += len(SIGNATURE)
        assert reply["op"] == "err" and reply["kind"] == "protocol"
        # two: no body
        reply = _exchange(router, [SIGNATURE, header])
        sent += len(SIGNATURE) + len(header)
        assert reply["op"] == "err" and reply["kind"] == "protocol"
        # four, wrong signature: never raw, a protocol error
        reply = _exchange(router, [b"XXXX", header, b"\xc0"])
        sent += 4 + len(header) + 1
        assert reply["op"] == "err" and reply["kind"] == "protocol"
        assert calls == []
        # four, plain: raw first (declines), then the handler
        reply = _exchange(router, [SIGNATURE, header, b"\xc0"])
        sent += len(SIGNATURE) + len(header) + 1
        assert reply == {"op": "ok", "re": 7}
        assert calls == [(header, b"\xc0")]
        assert seen[-1] == ({"op": "ping", "id": 7}, b"\xc0", [])
        # five and six: buffers after the body, never raw
        for extra in ([b"buf1"], [b"buf1", b"buffer2"]):
            reply = _exchange(router, [SIGNATURE, header, b"\xc0", *extra])
            sent += len(SIGNATURE) + len(header) + 1 + sum(map(len, extra))
            assert reply == {"op": "ok", "re": 7}
            assert seen[-1][2] == extra
        assert len(calls) == 1
        assert router.received == sent
    finally:
        node.close()


def test_a_raw_handler_that_serves_or_raises_keeps_the_server_up():
    def raw(router, identity, header, body):
        if body == b"\x01":
            raise RuntimeError("boom")  # logged, counted as served (False), no reply from the handler
        router.reply_packed(identity, pack_header({"op": "ok", "re": 1}), b"\xc0")
        return True

    node, router, seen = _serve(raw)
    try:
        header = pack_header({"op": "ping", "id": 1})
        assert _exchange(router, [SIGNATURE, header, b"\xc0"]) == {"op": "ok", "re": 1}
        assert seen == []
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        try:
            sock.connect(f"tcp://127.0.0.1:{router.port}")
            sock.send_multipart([SIGNATURE, header, b"\x01"])
            assert not sock.poll(300)  # the raw handler failed: no reply, the handler not run
        finally:
            sock.close()
        assert seen == []
        assert _exchange(router, [SIGNATURE, header, b"\xc0"]) == {"op": "ok", "re": 1}  # still serving
    finally:
        node.close()
