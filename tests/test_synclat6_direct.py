"""``Direct.call_fast`` (synclat6): a one-frame request (PROTOCOL.md), its reply read in one frame or
in three (the signature and the header as bytes, the body as a Frame). Every other layout still
reaches the matching by id: replies of another major version (with parts after the first), a lone
garbage frame, replies with buffers, late replies to other ids, an error reply; ``received`` counts
every byte read. A server without one-frame messages refuses the first one: it is sent again in three
frames (it never ran), and so are the next ones. The server's side: tests/test_synclat6_oneframe.py.
"""

from __future__ import annotations

import threading

import msgpack
import pytest
import zmq

import transport
from transport._framing import SIGNATURE, pack_header, pack_one, split_one
from transport._templates import ok_header


class _Scripted:
    """A bare ROUTER answering each request with the messages ``script(rid)`` gives; ``old``: it
    answers a one-frame request as a server that predates them does (``protocol`` error, ``re: nil``)."""

    def __init__(self, script, old: bool = False) -> None:
        self.script = script
        self.old = old
        self.requests: list = []  # (one frame?, header) of each request read
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.linger = 0
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            if not self.sock.poll(50):
                continue
            identity, *parts = self.sock.recv_multipart()
            if len(parts) == 1:
                split = split_one(parts[0])
                assert split is not None, parts
                head = split[0]
                if self.old:
                    self.requests.append((True, None))
                    error = {"op": "err", "re": None, "kind": "protocol", "msg": "expected at least 3 frames, got 1"}
                    self.sock.send_multipart([identity, SIGNATURE, pack_header(error), b"\xc0"])
                    continue
            else:
                head = parts[1]
            self.requests.append((len(parts) == 1, msgpack.unpackb(head)))
            for message in self.script(msgpack.unpackb(head)["id"]):
                self.sock.send_multipart([identity, *message])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close(0)


@pytest.fixture
def node():
    n = transport.Node()
    yield n
    n.close()


def _call(node, server, body=b"\x91\xa5hello"):
    rid = node.next_id()
    header = msgpack.packb({"op": "call", "obj": "o", "m": "m", "chain": "c", "id": rid})
    before = node.received_bytes
    got = node.call_fast(f"tcp://127.0.0.1:{server.port}", rid, [SIGNATURE, header, body], ok_header(rid), None)
    return rid, got, node.received_bytes - before


def _ok(rid, body=b"\xa5hello"):
    return [SIGNATURE, ok_header(rid), body]


def test_a_plain_ok_is_its_body_and_other_layouts_are_matched_by_id(node) -> None:
    scripts = {
        "plain": lambda rid: [_ok(rid)],
        "late and garbage first": lambda rid: [_ok(rid - 1), [b"garbage"], [b"AMSH\x02", b"x", b"y", b"z"], _ok(rid)],
        "buffers": lambda rid: [[SIGNATURE, ok_header(rid), b"\xc0", b"buf1", b"buf2"]],
        "error": lambda rid: [[SIGNATURE, pack_header({"op": "err", "re": rid, "kind": "x", "msg": "m"}), b"\xc0"]],
        "ok with a value field": lambda rid: [[SIGNATURE, pack_header({"op": "ok", "re": rid, "v": 1}), b"\x01"]],
    }
    for name, script in scripts.items():
        server = _Scripted(script)
        try:
            for _ in range(3):  # the first call connects; the next ones read on the same socket
                rid, got, received = _call(node, server)
                sent = script(rid)
                assert received == sum(len(p) for m in sent for p in m), name
                if name in ("plain", "late and garbage first"):
                    assert got == b"\xa5hello", name
                    continue
                header, body, buffers = got
                assert header["re"] == rid, name
                if name == "buffers":
                    assert bytes(body) == b"\xc0" and [bytes(b) for b in buffers] == [b"buf1", b"buf2"]
                elif name == "error":
                    assert header["op"] == "err" and header["kind"] == "x"
                else:
                    assert header == {"op": "ok", "re": rid, "v": 1} and bytes(body) == b"\x01"
        finally:
            server.close()


def test_one_frame_replies_of_every_kind_are_read(node) -> None:
    def script(rid):
        return [
            [pack_one(ok_header(rid - 1), b"\xa3old")],  # a late reply to another call: dropped
            [pack_one(pack_header({"op": "err", "re": rid, "kind": "x", "msg": "m"}), b"\xc0")],
        ]

    server = _Scripted(script)
    try:
        rid, got, received = _call(node, server)
        assert received == sum(len(m[0]) for m in script(rid))
        header, body, buffers = got
        assert header == {"op": "err", "re": rid, "kind": "x", "msg": "m"} and bytes(body) == b"\xc0" and buffers == []
        server.script = lambda rid: [[pack_one(ok_header(rid), b"\xa5hello")]]
        assert _call(node, server)[1] == b"\xa5hello"
        assert [one for one, _ in server.requests] == [True, True]
    finally:
        server.close()


def test_a_server_without_one_frame_messages_gets_three_frames_and_runs_each_call_once(node) -> None:
    server = _Scripted(lambda rid: [_ok(rid)], old=True)
    try:
        for _ in range(3):
            rid, got, _received = _call(node, server)
            assert got == b"\xa5hello"
        # the first call: refused in one frame (it never ran), then sent again in three; the next ones in three
        assert [one for one, _ in server.requests] == [True, False, False, False]
        assert [h["id"] for _, h in server.requests[1:]] == [rid - 2, rid - 1, rid]
    finally:
        server.close()


def test_a_large_request_goes_in_three_frames(node) -> None:
    server = _Scripted(lambda rid: [_ok(rid)])
    try:
        assert _call(node, server, body=msgpack.packb([["x" * 2000], {}]))[1] == b"\xa5hello"
        assert _call(node, server)[1] == b"\xa5hello"
        assert [one for one, _ in server.requests] == [False, True]
    finally:
        server.close()
