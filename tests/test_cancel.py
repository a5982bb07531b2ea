"""Cancellation: fut.cancel() stops queued and running calls, and what they started, on every server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

import mesh
from cancel_agents import Worker
from conftest import read_line, wait_until

TESTS = os.path.dirname(os.path.abspath(__file__))


def on(srv) -> dict:
    return {"host": srv.host, "port": srv.port}


def status(srv) -> dict:
    client = mesh.client._client.get_client()
    fut = client.request(srv.address, {"op": "status"}, None, timeout=5)
    return mesh.client._replies.decode_reply(fut.result(10), srv.address)


def test_a_queued_call_never_runs(server):
    w = Worker(to_dist=on(server))
    running = w.spin(30)
    queued = w.mark("queued")
    wait_until(lambda: "spin-start" in w.log, timeout=10)
    assert queued.cancel() is True
    with pytest.raises(mesh.Cancelled):
        queued.result(timeout=5)
    assert running.cancel() is True
    assert w.mark("after").result(timeout=10) == "after"
    assert "queued" not in w.log


def test_a_running_sync_method_sees_cancelled_and_check_cancelled_raises(server):
    w = Worker(to_dist=on(server))
    fut = w.spin(30)
    wait_until(lambda: "spin-start" in w.log, timeout=10)
    assert fut.cancel() is True
    with pytest.raises(mesh.Cancelled):
        fut.result(timeout=5)
    wait_until(lambda: "spin-end" in w.log, timeout=10)
    assert "spin-saw-cancel" in w.log


def test_a_running_coroutine_gets_cancelled_error_and_its_finally_runs(server):
    w = Worker(to_dist=on(server))
    fut = w.nap(30)
    wait_until(lambda: "nap-start" in w.log, timeout=10)
    assert fut.cancel() is True
    with pytest.raises(mesh.Cancelled):
        fut.result(timeout=5)
    wait_until(lambda: "nap-finally" in w.log, timeout=10)
    assert "nap-cancelled" in w.log


def test_reading_a_cancelled_future_raises_cancelled_every_time_and_await_too(server):
    w = Worker(to_dist=on(server))
    fut = w.nap(30)
    assert fut.cancel() is True
    for _ in range(2):
        with pytest.raises(mesh.Cancelled):
            fut.result()

    async def read():
        return await fut

    with pytest.raises(mesh.Cancelled):
        asyncio.run(read())
    assert fut.done()
    assert isinstance(mesh.Cancelled("x"), mesh.MeshError)


def test_an_uncooperative_sync_method_still_holds_its_object_until_it_returns(server):
    w = Worker(to_dist=on(server))
    fut = w.stubborn(1.0)
    time.sleep(0.1)  # let it start (if it has not, cancel stops it while queued: also fine)
    assert fut.cancel() is True
    with pytest.raises(mesh.Cancelled):
        fut.result(timeout=5)
    assert w.mark("next").result(timeout=10) == "next"
    marks = w.log
    assert marks.index("next") > marks.index("stubborn-end") if "stubborn-end" in marks else marks == ["next"]


def test_a_cancel_for_a_finished_or_unknown_task_changes_nothing(server):
    w = Worker(to_dist=on(server))
    fut = w.mark("x")
    assert fut.result(timeout=10) == "x"
    assert fut.cancel() is False
    assert fut.result() == "x"
    client = mesh.client._client.get_client()
    for task in ("no-such-task", fut._mesh_task):
        reply = client.request(server.address, {"op": "cancel", "task": task}, None, timeout=5).result(10)
        assert mesh.client._replies.decode_reply(reply, server.address) is False
    assert w.mark("y").result(timeout=10) == "y"


def test_bad_cancel_requests_are_refused_and_change_nothing(server):
    client = mesh.client._client.get_client()
    for header in ({"op": "cancel"}, {"op": "cancel", "task": 5}, {"op": "cancel", "task": "x" * 200},
                   {"op": "cancel", "task": "t", "why": 3}, {"op": "cancel", "all": "yes"},
                   {"op": "call", "obj": "o", "m": "f", "dl": "soon"}, {"op": "call", "obj": "o", "m": "f", "dl": float("nan")}):
        reply = client.request(server.address, header, None, timeout=5).result(10)
        assert reply[0]["op"] == "err" and reply[0]["kind"] == "badrequest", header
    w = Worker(to_dist=on(server))
    assert w.mark("ok").result(timeout=10) == "ok"


def test_a_server_without_cancel_answers_and_cancel_returns_false(server):
    w = Worker(to_dist=on(server))
    fut = w.nap(0.5)
    server._host.servicer._ops.pop("cancel")  # a 1.2 server: "unknown op"
    assert fut.cancel() is False
    assert fut.result(timeout=10) == "napped"


def test_cancel_cascades_three_hops_across_servers(server, spawn_server):
    b_srv, c_srv = spawn_server(), spawn_server()
    a, b, c = Worker(to_dist=on(server)), Worker(to_dist=on(b_srv)), Worker(to_dist=on(c_srv))
    fut = a.relay2(b, c, 30)
    wait_until(lambda: "nap-start" in c.log, timeout=10)
    assert fut.cancel() is True
    wait_until(lambda: "nap-finally" in c.log, timeout=10)
    assert "nap-cancelled" in c.log
    with pytest.raises(mesh.Cancelled):
        fut.result(timeout=5)


def test_cancel_cascades_to_a_nested_sync_call(server, spawn_server):
    other = Worker(to_dist=on(spawn_server()))
    w = Worker(to_dist=on(server))
    fut = w.sync_relay(other, 30)
    time.sleep(0.3)
    assert fut.cancel() is True
    wait_until(lambda: "inner-saw-cancel" in other.log, timeout=10)


def test_cancel_cascades_to_calls_made_by_passing_futures_on(server, spawn_server):
    producer, consumer = Worker(to_dist=on(spawn_server())), Worker(to_dist=on(spawn_server()))
    w = Worker(to_dist=on(server))
    fut = w.pass_on(producer, consumer, 30)
    wait_until(lambda: "made-start" in producer.log and "reader-start" in consumer.log, timeout=10)
    assert fut.cancel() is True
    wait_until(lambda: "made-finally" in producer.log, timeout=10)
    wait_until(lambda: "reader-finally" in consumer.log, timeout=10)


def test_cancel_follows_a_forwarded_future(server, spawn_server):
    other = Worker(to_dist=on(spawn_server()))
    w = Worker(to_dist=on(server))
    fut = w.forward(other, 30)
    wait_until(lambda: "forwarded-start" in other.log, timeout=10)
    assert fut.cancel() is True
    wait_until(lambda: "forwarded-finally" in other.log, timeout=10)


def test_a_call_outside_any_cancel_sees_nothing():
    assert mesh.cancelled() is False
    mesh.check_cancelled()
    assert mesh.time_left() is None


_APP = """
import sys, time
sys.path.insert(0, {tests!r})
import mesh
from cancel_agents import Worker
ws = [Worker(to_dist={{"host": {host!r}, "port": {port}}}) for _ in range(5)]
futs = [w.{method}(60) for w in ws]
print("ready", flush=True)
print([f.result() for f in futs])
"""


@pytest.mark.parametrize("method", ["spin", "nap"])
def test_ctrl_c_while_waiting_cancels_what_the_client_started_and_exits_fast(spawn_server, method):
    srv = spawn_server()
    code = _APP.format(tests=TESTS, host=srv.host, port=srv.port, method=method)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert read_line(proc.stdout).strip() == "ready"
        key = "running" if method == "spin" else "aio_running"
        wait_until(lambda: status(srv)[key] == 5, timeout=20)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
        took = time.monotonic() - t0
        assert proc.returncode != 0
        assert "KeyboardInterrupt" in proc.stderr.read()
        wait_until(lambda: status(srv)[key] == 0, timeout=10)
        assert took < 10  # the figure (well under 1 s) is benchmarks/cancel.py's; here: not the grace
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
