"""Object lifetime: leases, detached named objects, result release, many applications per server."""

from __future__ import annotations

import gc
import os
import time

import pytest

import mesh
from agents_lib import Consumer, Holder, Producer, Store
from conftest import run_app, wait_until

TESTS = os.path.dirname(os.path.abspath(__file__))


def status(srv) -> dict:
    from mesh._cli import _admin  # noqa: F401 - same request the CLI makes

    client = mesh.client._client.get_client()
    fut = client.request(srv.address, {"op": "status"}, None, timeout=5)
    return mesh.client._replies.decode_reply(fut.result(10), srv.address)




def test_objects_die_with_the_process_that_created_them(spawn_server):
    srv = spawn_server(port=0, lease_ttl=1.0)
    run_app(srv, "s = Store(to_dist={'host': HOST, 'port': PORT}); s.add(1)")  # clean exit: bye
    wait_until(lambda: status(srv)["agents"] == [], timeout=5)
    run_app(srv, "s = Store(to_dist={'host': HOST, 'port': PORT}); s.add(1); print('ready', flush=True)\nimport time; time.sleep(60)", kill=True)
    assert len(status(srv)["agents"]) == 1
    wait_until(lambda: status(srv)["agents"] == [], timeout=10)  # lease expired


def test_detached_named_object_outlives_its_creator(spawn_server):
    srv = spawn_server(port=0, lease_ttl=1.0)
    run_app(srv, "s = Store(to_dist={'host': HOST, 'port': PORT, 'name': 'ledger', 'detached': True}); s.add(5)")
    ledger = mesh.get("ledger", host=srv.host, port=srv.port)
    assert ledger.add(1) == 6
    with pytest.raises(mesh.AgentNotFound):
        mesh.get("nope", host=srv.host, port=srv.port)
    with pytest.raises(mesh.MeshError, match="already exists"):
        Store(to_dist={"host": srv.host, "port": srv.port, "name": "ledger", "detached": True})
    mesh.delete(ledger)
    with pytest.raises(mesh.AgentNotFound):
        ledger.add(1)
    with pytest.raises(mesh.AgentNotFound):
        mesh.get("ledger", host=srv.host, port=srv.port)


def test_live_client_keeps_its_objects(spawn_server):
    srv = spawn_server(port=0, lease_ttl=1.0)
    s = Store(to_dist={"host": srv.host, "port": srv.port})
    s.add(1)
    time.sleep(3.0)  # idle for 3 lease periods: only lease renewals keep it (this sleep is the subject, not a sync)
    assert s.add(0) == 1


def test_unshared_results_are_released_when_dropped(server):
    prod = Producer(to_dist={"host": server.host, "port": server.port})
    for _ in range(50):
        prod.make(100).result(timeout=10)
    kept = prod.make(100)
    kept.result(timeout=10)
    import pickle

    pickle.dumps(kept)  # shared: must stay
    pool = server._servicer.pool
    wait_until(lambda: len(pool) == 1, timeout=5)
    assert pool.get(kept._mesh_task) is not None


def settle(srv) -> None:
    """Send pending releases, then wait until the server has handled them (same socket, in order)."""
    client = mesh.client._client.get_client()
    gc.collect()
    client.flush_releases()
    client.request(srv.address, {"op": "ping"}, None, timeout=5).result(10)


@pytest.mark.parametrize("owner_last", [False, True])
def test_shared_result_is_released_once_every_holder_is_gone(server, owner_last):
    where = {"host": server.host, "port": server.port}
    prod, a, b = Producer(to_dist=where), Holder(to_dist=where), Holder(to_dist=where)
    pool = server._servicer.pool
    f = prod.make(1000)
    a.hold("x", f)  # a borrower on a
    a.give("x", b)  # a passes it on, unread: a borrower on b that a made
    if not owner_last:
        del f
    a.drop("x")
    settle(server)
    assert len(pool) == 1 and b.size("x") == 1000  # b still holds it: kept
    b.drop("x")
    settle(server)
    if owner_last:
        assert len(pool) == 1  # the caller still holds it
        assert f.result(timeout=5) == b"p" * 1000
        del f
        settle(server)
    wait_until(lambda: len(pool) == 0, timeout=5)


def test_future_inside_a_result_is_kept_until_it_expires(server):
    where = {"host": server.host, "port": server.port}
    prod, cons = Producer(to_dist=where), Consumer(to_dist=where)
    pool = server._servicer.pool
    f = prod.make(10)
    task = f._mesh_task
    back = cons.forward(f)  # the future travels back inside a result: readable any number of times
    del f
    settle(server)
    assert back.result(timeout=5) == b"p" * 10
    del back
    settle(server)
    assert pool.get(task) is not None


def test_result_passed_to_a_call_that_never_ran_is_released(server):
    where = {"host": server.host, "port": server.port}
    prod, cons = Producer(to_dist=where), Consumer(to_dist=where)
    pool = server._servicer.pool
    mesh.delete(cons)
    f = prod.make(10)
    with pytest.raises(mesh.AgentNotFound):
        cons.size(f)  # the server drops the call's arguments unread, and says so to the producer
    del f
    settle(server)
    wait_until(lambda: len(pool) == 0, timeout=5)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_neither_releases_nor_reuses_the_parents_futures(server):
    where = {"host": server.host, "port": server.port}
    prod = Producer(to_dist=where)
    f = prod.make(300_000)  # a large value: its release would go out at once
    f.done() or wait_until(f.done, timeout=10)
    parent_next = mesh._core.ids.new_chain()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop its copy of f while using the mesh, then report its next id
        try:
            assert prod.make(1).result(timeout=10) == b"p"  # the child uses the mesh: its own client
            del f
            gc.collect()
            os.write(w, mesh._core.ids.new_chain().encode())
            mesh.client._client.shutdown_client()  # flushes any release it would have sent
        finally:
            os._exit(0)
    os.close(w)
    child_next = os.read(r, 200).decode()
    os.close(r)
    os.waitpid(pid, 0)
    settle(server)
    assert child_next.split(".")[0] != parent_next.split(".")[0]  # fresh ids in the child
    assert f.result(timeout=10) == b"p" * 300_000  # the parent's result is still there


def test_many_short_applications_leave_the_server_flat(spawn_server):
    srv = spawn_server(port=0)
    code = (
        "ps = [Producer(to_dist={'host': HOST, 'port': PORT}) for _ in range(5)]\n"
        "assert [p.make(10).result() for p in ps] == [b'p' * 10] * 5\n"
    )
    for _ in range(10):
        run_app(srv, code)
    wait_until(lambda: status(srv)["agents"] == [] and status(srv)["results"] == 0, timeout=10)


def test_graceful_shutdown_finishes_running_calls_and_fails_queued_ones(spawn_server):
    import signal

    srv = spawn_server(port=0, grace=5.0)
    prod = Producer(to_dist={"host": srv.host, "port": srv.port})
    running = prod.make(10, delay=1.0)
    queued = prod.make(20)  # same actor: waits behind the running call
    # wait until `running` runs and `queued` waits: a worker busy with the (pipelined) constructor
    # also counts as running, and then both calls are still in the mailbox
    def one_running_one_queued() -> bool:
        s = status(srv)
        return s["running"] >= 1 and s["queued"] == 1

    wait_until(one_running_one_queued, timeout=5)
    os.kill(srv.pid, signal.SIGTERM)
    assert running.result(timeout=10) == b"p" * 10
    with pytest.raises(mesh.ServerUnavailable):
        queued.result(timeout=10)
    assert srv._proc.wait(10) == 0


def test_message_too_large_is_refused_before_sending(spawn_server):
    srv = spawn_server(port=0, max_message_size=1_000_000)
    store = Store(to_dist={"host": srv.host, "port": srv.port})
    with pytest.raises(mesh.MessageTooLarge, match="1000000"):
        store.add(b"x" * 2_000_000)
    assert store.add(2) == 2  # nothing was lost, the connection is fine
