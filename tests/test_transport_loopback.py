"""transport._loopback: the socket-free stand-in for Node answers like a node would."""

from __future__ import annotations

import threading

import pytest

import transport
from transport._loopback import Loopback


def _echo(router, identity, header, body, buffers):
    router.reply(identity, {"op": "ok", "re": header["id"]}, body, buffers)


def test_a_request_reaches_the_registered_handler_and_its_reply_the_future():
    lb = Loopback()
    router = lb.add_router("127.0.0.1", 0, _echo)
    header, body, buffers = lb.call(router.endpoint, {"op": "ping", "id": lb.next_id()}, b"body", [b"buf"])
    assert header["op"] == "ok" and body == b"body" and buffers == [b"buf"]
    fut = lb.request(router.endpoint, {"op": "ping", "id": lb.next_id()}, b"x")
    assert fut.result(1)[1] == b"x"


def test_a_reply_from_another_thread_later_completes_the_request():
    lb = Loopback()
    held = []
    router = lb.add_router("127.0.0.1", 0, lambda r, ident, h, b, bufs: held.append((ident, h)))
    fut = lb.request(router.endpoint, {"op": "slow", "id": lb.next_id()}, b"")
    assert not fut.done()
    ident, h = held[0]
    t = threading.Thread(target=router.reply, args=(ident, {"op": "ok", "re": h["id"]}))
    t.start()
    t.join(5)
    assert fut.result(5)[0]["re"] == h["id"]


def test_the_failures_are_the_nodes():
    lb = Loopback()
    with pytest.raises(transport.PeerUnavailable):
        lb.call("tcp://127.0.0.1:1", {"op": "ping", "id": lb.next_id()}, b"")
    router = lb.add_router("127.0.0.1", 0, lambda *a: None)  # never answers
    with pytest.raises(transport.RequestTimeout):
        lb.call(router.endpoint, {"op": "ping", "id": lb.next_id()}, b"", timeout=0.05)
    fut = lb.request(router.endpoint, {"op": "ping", "id": lb.next_id()}, b"")
    lb.close()
    with pytest.raises(transport.NodeClosed):
        fut.result(1)
    with pytest.raises(transport.NodeClosed):
        lb.call(router.endpoint, {"op": "ping", "id": lb.next_id()}, b"")
