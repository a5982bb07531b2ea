"""Acceptance tests of API.md, fifth pass: futures as a user handles them (pickled into another
process, read twice, given alone to ``mesh.wait``), and what errors and reprs say."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time

import pytest

import mesh
from conftest import TESTS
from contract5_lib import Bot, Calc


def on(srv):
    return {"host": srv.host, "port": srv.port}


CHILD = r"""
import json, pickle, sys
sys.path.insert(0, sys.argv[1])
import mesh
c, f, s, p, e = pickle.loads(sys.stdin.buffer.read())
out = {"mul": c.mul(5), "note": c.note("child"), "fut": f.result(timeout=20), "stream": list(s),
       "ph": [p.name, p.content, isinstance(p, mesh.Msg)]}
try:
    e.result(timeout=20)
except KeyError as exc:  # a RemoteError that is also the remote KeyError
    out["err"] = [type(exc).__name__, isinstance(exc, mesh.RemoteError), exc.remote_type]
print(json.dumps(out), flush=True)
mesh.shutdown()
"""


def test_futures_a_proxy_and_a_stream_pickled_by_the_user_are_read_in_another_process(spawn_server):
    srv = spawn_server(port=0)
    c, bot = Calc(3, to_dist=on(srv)), Bot("bob", to_dist=on(srv))
    f = c.slow.remote(0.3, {"a": [1, 2]})  # still running when it is pickled
    s = c.gen(3, 0.1)  # still being produced
    p = bot(mesh.Msg("user", "hi", role="user"))
    e = c.boom.remote("missing")
    blob = pickle.dumps((c, f, s, p, e))
    out = subprocess.run([sys.executable, "-c", CHILD, TESTS], input=blob, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    got = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert got["mul"] == 15 and got["note"] == ["child"]
    assert got["fut"] == {"a": [1, 2]} and got["stream"] == [0, 1, 2]
    assert got["ph"] == ["bob", "re:hi", True]
    assert got["err"][1] is True and got["err"][2] == "KeyError"
    # the values are still there for this process, which made the calls: another reader took nothing
    assert f.result(timeout=10) == {"a": [1, 2]} and s.result(timeout=10) == [0, 1, 2]
    assert p.content == "re:hi" and c.note("parent") == ["child", "parent"]  # one actor for both processes
    with pytest.raises(KeyError):
        e.result(timeout=10)


def test_reading_a_result_twice_gives_the_same_value_and_a_failure_twice_the_same_error(server):
    import asyncio

    c = Calc(2, to_dist=on(server))
    f = c.slow.remote(0.05, [1, {"x": 2}])
    assert f.result(timeout=10) == [1, {"x": 2}] == f.result(timeout=10) == f.result(timeout=0)
    assert asyncio.run(asyncio.wait_for(_awaited(f), 10)) == [1, {"x": 2}]
    assert f.done() and f.done()
    e = c.boom.remote("k")
    errors = []
    for _ in range(2):
        with pytest.raises(mesh.RemoteError) as info:
            e.result(timeout=10)
        errors.append(info.value)
    with pytest.raises(KeyError):
        asyncio.run(asyncio.wait_for(_awaited(e), 10))
    assert all(isinstance(x, KeyError) and x.remote_type == "KeyError" for x in errors)
    assert "k" in str(errors[0]) and str(errors[0]) == str(errors[1])
    s = c.gen(4)
    assert list(s) == [0, 1, 2, 3] and list(s) == [0, 1, 2, 3]  # every reader, from the start
    assert s.result(timeout=10) == s.result(timeout=10) == [0, 1, 2, 3]


async def _awaited(fut):
    return await fut


@pytest.mark.parametrize("kind", ["AsyncResult", "Stream", "Placeholder"])
@pytest.mark.parametrize("fn", ["wait", "as_completed"])
def test_one_future_given_alone_to_wait_is_a_type_error_at_once(server, kind, fn):
    # ray.wait(ref) is a TypeError; here iterating the future would wait for its value (or its
    # stream's items) without any timeout, and hand back the value's items
    c = Calc(1, to_dist=on(server))
    fut = {"AsyncResult": lambda: c.slow.remote(5, [1, 2]), "Stream": lambda: c.gen(3, 2.0),
           "Placeholder": lambda: Bot("b", to_dist=on(server))(mesh.Msg("u", "x"))}[kind]()
    start = time.monotonic()
    with pytest.raises(TypeError) as info:
        got = getattr(mesh, fn)(fut, timeout=0.1)
        list(got)  # (as_completed yields lazily)
    assert time.monotonic() - start < 2.0
    assert fn in str(info.value) and kind in str(info.value) and "list" in str(info.value)
    done, pending = mesh.wait([fut], timeout=0)  # in a list: fine
    assert done == [] and len(pending) == 1 and pending[0] is fut
    fut.cancel()


@pytest.mark.parametrize("setting", ["capacity", "max_len", "max_expire_time", "max_message_size", "grace"])
def test_a_server_setting_of_the_wrong_type_is_refused_naming_the_setting(setting):
    with pytest.raises((ValueError, TypeError)) as info:
        mesh.AgentServer(advertise=False, **{setting: "lots"})
    assert setting in str(info.value) and "lots" in str(info.value)


def test_errors_say_what_failed_and_where(server):
    c = Calc(1, to_dist=on(server))
    with pytest.raises(AttributeError) as info:
        c._hidden  # noqa: B018
    assert "_hidden" in str(info.value) and "private" in str(info.value)
    with pytest.raises(TypeError) as info:
        Calc(to_dist={**on(server), "colour": "red"})
    assert "colour" in str(info.value)
    with pytest.raises(mesh.AgentNotFound) as info:
        mesh.get("nobody-here", server.host, server.port)
    assert "nobody-here" in str(info.value)
    gone = Calc(to_dist=on(server))
    assert gone.mul(2) == 2
    mesh.delete(gone)
    with pytest.raises(mesh.AgentNotFound) as info:
        gone.mul(2)
    assert server.address in str(info.value)
    mesh.init(call_timeout=0.2)
    with pytest.raises(mesh.CallTimeout) as info:
        c.slow(3, 0)
    assert server.address in str(info.value)
    mesh.init(call_timeout=None)
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(mesh.ServerUnavailable) as info:
        Calc(to_dist={"host": "127.0.0.1", "port": port}).mul(1)
    assert f"127.0.0.1:{port}" in str(info.value)


def test_reprs_name_the_class_the_state_and_the_server(server):
    c = Calc(1, to_dist=on(server))
    assert "Calc" in repr(c) and server.address in repr(c)
    f = c.slow.remote(0.2, 1)
    assert "AsyncResult" in repr(f) and "pending" in repr(f) and server.address in repr(f)
    assert f.result(timeout=10) == 1 and "done" in repr(f)
    s = c.gen(2)
    assert "Stream" in repr(s) and server.address in repr(s)
    assert s.result(timeout=10) == [0, 1]
    p = Bot("b", to_dist=on(server))(mesh.Msg("u", "x"))
    assert "Placeholder" in repr(p)
    assert p.content == "re:x"
    m = mesh.Msg("ann", "hello")
    assert "ann" in repr(m) and "hello" in repr(m)
    assert server.address in repr(server)


def test_a_server_is_a_context_manager():
    with mesh.AgentServer(port=0, advertise=False) as srv:
        assert srv.port > 0 and Calc(4, to_dist=on(srv)).mul(2) == 8
    with pytest.raises(mesh.ServerUnavailable):
        Calc(to_dist=on(srv)).mul(1)
