"""``zmq-agent-server stop`` succeeds only once the server confirmed: the server keeps its socket open
until its reply is out (before, about one stop in five lost its reply to the closing socket and was
taken as a success), and a connection that closes after the request went out, with no reply, is
exit 3 with a message that says the outcome is unknown."""

from __future__ import annotations

import json
import threading

import zmq
from conftest import run_cli

import mesh


def test_a_stop_is_confirmed_every_time():
    for _ in range(4):  # the old server lost its reply about once in five
        srv = mesh.AgentServer(port=0, advertise=False, grace=0.5).launch(in_subprocess=True)
        try:
            out = run_cli("stop", f"{srv.host}:{srv.port}", "--json")
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout) == {"ok": True, "address": srv.address, "stopping": True}
            assert srv._proc.wait(20) == 0
        finally:
            srv.shutdown()


def _fake_server(answer: bool) -> tuple[int, threading.Thread, list]:
    """A ROUTER that reads one request, then closes without a reply (or answers ``err``)."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    seen: list = []

    def serve() -> None:
        try:
            if sock.poll(20_000):
                frames = sock.recv_multipart()
                seen.append(frames)
                if answer:
                    import msgpack

                    header = msgpack.unpackb(frames[2])
                    sock.send_multipart([frames[0], frames[1], msgpack.packb(
                        {"op": "err", "re": header["id"], "kind": "badrequest", "msg": "not today"}), b"\xc0"])
                    sock.poll(500)  # let the reply out
        finally:
            sock.close(0 if not answer else 500)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return port, t, seen


def test_a_stop_whose_connection_closes_before_the_reply_is_exit_3():
    port, t, seen = _fake_server(answer=False)
    out = run_cli("stop", f"127.0.0.1:{port}", "--timeout", "10")
    t.join(10)
    assert seen, "the stop never reached the server"
    assert out.returncode == 3, (out.returncode, out.stderr)
    assert "before the server confirmed the stop" in out.stderr and "status" in out.stderr

    port, t, seen = _fake_server(answer=False)
    out = run_cli("stop", f"127.0.0.1:{port}", "--timeout", "10", "--json")
    t.join(10)
    assert out.returncode == 3
    reply = json.loads(out.stdout)
    assert reply["ok"] is False and reply["confirmed"] is False and reply["address"] == f"127.0.0.1:{port}"


def test_a_refused_stop_is_exit_1_and_says_why():
    port, t, seen = _fake_server(answer=True)
    out = run_cli("stop", f"127.0.0.1:{port}", "--timeout", "10")
    t.join(10)
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert "not today" in out.stderr


def test_a_stop_to_nobody_is_exit_1():
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    sock.close(0)  # a free port: nobody listens
    out = run_cli("stop", f"127.0.0.1:{port}", "--timeout", "3")
    assert out.returncode == 1 and "confirmed" not in out.stderr, out.stderr
