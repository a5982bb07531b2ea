"""Agents and placeholders: parallelism from sequential code, futures by reference, no deadlocks."""

from __future__ import annotations

import pickle
import time

import pytest

import mesh
from agents_lib import Appender, Caller, Consumer, Echo, Joiner, Producer, Sleeper, Store
from mesh import Msg


def on(srv):
    return {"host": srv.host, "port": srv.port}


def test_msg_fields_equality_and_dict_round_trip():
    m = Msg("alice", {"k": 1}, role="user", url="http://x", metadata={"m": 2}, extra_field=3)
    assert (m.name, m.content, m.role, m.url, m.metadata, m.extra_field) == ("alice", {"k": 1}, "user", "http://x", {"m": 2}, 3)
    assert isinstance(m.id, str) and m.id and m.timestamp
    assert Msg.from_dict(m.to_dict()) == m
    with pytest.raises(TypeError, match="Msg.from_dict"):
        Msg.from_dict(5)
    with pytest.raises(ValueError, match="name"):
        Msg.from_dict({"content": 1})
    assert m != Msg("alice", {"k": 1}, role="user")  # another id
    assert m["content"] == {"k": 1}
    assert Msg("a", 1).id != Msg("a", 1).id


def test_agent_local_and_remote_behave_the_same(server):
    local = Echo("e")
    remote = Echo("e", to_dist=on(server))
    x = Msg("user", "hi", role="user")
    a = local(x)
    b = remote(x)
    assert isinstance(a, Msg) and not isinstance(a, mesh.Placeholder)
    assert isinstance(b, mesh.Placeholder) and isinstance(b, Msg)
    assert (a.name, a.content) == (b.name, b.content) == ("e", "hi")
    assert isinstance(b.result(), Msg)
    assert remote.name == "e"
    assert [m.content for m in remote.memory] == ["hi"]
    assert remote.agent_id and remote.state_dict()["memory"][0]["content"] == "hi"


def test_agent_state_dict_round_trip():
    a = Echo("s")
    a.observe(Msg("u", "one"))
    a.observe([Msg("u", "two"), Msg("u", "three")])
    state = a.state_dict()
    b = Echo("other")
    b.load_state_dict(state)
    assert b.name == "s" and [m.content for m in b.memory] == ["one", "two", "three"]


def test_five_sleepers_run_in_parallel(server):
    agents = [Sleeper(f"s{i}", 0.4, to_dist=on(server)) for i in range(5)]
    t = time.perf_counter()
    outs = [a(Msg("u", "go")) for a in agents]
    assert [o.content for o in outs] == ["go"] * 5
    parallel = time.perf_counter() - t
    t = time.perf_counter()
    for a in agents[:2]:
        a(Msg("u", "go")).content
    two_sequential = time.perf_counter() - t
    assert parallel < two_sequential  # 5 in parallel beat 2 one after another


def test_chain_and_dag_run_with_maximal_parallelism(spawn_server):
    s1, s2 = spawn_server(port=0, capacity=8), spawn_server(port=0, capacity=8)
    # chain: x = a(x); x = b(x); ...
    chain = [Appender(f"n{i}", to_dist=on(s1 if i % 2 else s2)) for i in range(4)]
    x = None
    for agent in chain:
        x = agent(x)
    assert x.content == ["n0", "n1", "n2", "n3"]
    # DAG: A->B, A->C, (B, C)->D, E; F(D, E). Every node sleeps 0.3 s: critical path A,B,D,F = 1.2 s
    d = 0.3
    A = Sleeper("A", d, to_dist=on(s1))
    B = Sleeper("B", d, to_dist=on(s2))
    C = Sleeper("C", d, to_dist=on(s1))
    D = Joiner("D", d, to_dist=on(s2))
    E = Sleeper("E", d, to_dist=on(s1))
    F = Joiner("F", d, to_dist=on(s2))
    t = time.perf_counter()
    a = A(Msg("u", []))
    b, c = B(a), C(a)
    dd = D([b, c])
    e = E(Msg("u", ["e"]))
    f = F([dd, e])
    issued = time.perf_counter() - t
    assert f.content == [[["A", "B"], ["A", "C"]], ["e", "E"]]
    elapsed = time.perf_counter() - t
    assert issued < d  # nothing waited while the graph was built
    assert elapsed < 6 * d  # 4 levels on the critical path (1.2 s), far from 6 nodes one by one (1.8 s)


def test_future_travels_by_reference_not_through_the_caller(spawn_server):
    s1, s2 = spawn_server(port=0), spawn_server(port=0)
    prod = Producer(to_dist=on(s1))
    cons = Consumer(to_dist=on(s2))
    node = mesh.client._client.get_client().node
    before_rx, before_tx = node.received_bytes, node.sent_bytes
    fut = prod.make(5_000_000)
    assert cons.size(fut) == 5_000_000
    assert node.received_bytes - before_rx < 2048  # the 5 MB went S1 -> S2 directly
    assert node.sent_bytes - before_tx < 2048


def test_passing_a_future_never_waits(spawn_server):
    s1, s2 = spawn_server(port=0), spawn_server(port=0)
    prod = Producer(to_dist=on(s1))
    cons = Consumer(to_dist=on(s2))
    t = time.perf_counter()
    slow = prod.make(10, delay=1.0)
    out = Echo("e", to_dist=on(s2))(Msg("u", slow))  # the Msg carries the future; nothing waits here
    assert time.perf_counter() - t < 0.5
    assert out.content.result(timeout=10) == b"p" * 10  # the nested future is still a reference
    assert cons.size(prod.make(3)) == 3


def test_forwarded_future_is_forwarded_by_reference(spawn_server):
    s1, s2 = spawn_server(port=0), spawn_server(port=0)
    prod = Producer(to_dist=on(s1))
    cons = Consumer(to_dist=on(s2))
    value = cons.forward(prod.make(1000))  # s2 returns the reference it got
    assert value == b"p" * 1000 or value.result() == b"p" * 1000


def test_wait_on_agent_of_same_server_with_capacity_1(spawn_server):
    srv = spawn_server(port=0, capacity=1)
    echo = Echo("echo", to_dist=on(srv))
    caller = Caller("caller", echo, to_dist=on(srv))
    assert caller(Msg("u", "ping")).result(timeout=20).content == "caller got: ping"


def test_call_chain_coming_back_does_not_deadlock(spawn_server):
    srv = spawn_server(port=0, capacity=1)
    a = Caller("A", to_dist=on(srv))
    b = Caller("B", to_dist=on(srv))
    a.set_peer(b)
    b.set_peer(a)
    assert a.ask_back(4) == "A>B>A>B>A"


def test_producer_error_gives_remote_error_to_consumer(spawn_server):
    s1, s2 = spawn_server(port=0), spawn_server(port=0)
    prod = Producer(to_dist=on(s1))
    cons = Consumer(to_dist=on(s2))
    with pytest.raises(mesh.RemoteError) as info:
        cons.size(prod.fail())
    assert "producer failed" in str(info.value)


def _loose_call(prod, n: int) -> str:
    """An async make(n) sent without a session: nobody holds its result, so max_len bounds it."""
    client = mesh.client._client.get_client()
    task = mesh._core.ids.new_chain()
    header = {"op": "call", "obj": prod._mesh_id, "m": "make", "chain": task, "task": task, "keep": 1, "sess": None}
    mesh.client._replies.decode_reply(client.request(prod._mesh_address, header, [[n], {}]).result(10), prod._mesh_address)
    return task


def test_expired_result_gives_result_expired(spawn_server):
    # Changed with issue 10 point 17: max_len bounds only results that no live future holds, so
    # the first result is made by a caller without a session (its holders cannot be tracked).
    srv = spawn_server(port=0, max_len=1)
    prod = Producer(to_dist=on(srv))
    first = _loose_call(prod, 10)
    assert mesh.AsyncResult(srv.address, first).result(timeout=10) == b"p" * 10
    _loose_call(prod, 20)  # evicts the first (max_len=1)
    again = mesh.AsyncResult(srv.address, first)  # another holder of the first future
    with pytest.raises(mesh.ResultExpired):
        again.result(timeout=10)


def test_producer_death_fails_consumers_promptly(spawn_server):
    import threading

    s1, s2 = spawn_server(port=0), spawn_server(port=0)
    prod = Producer(to_dist=on(s1))
    cons = Consumer(to_dist=on(s2))
    fut = prod.make(10, delay=60)
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            cons.size(fut)  # s2 waits on s1 for the value
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=consume)
    t.start()
    other_holder = mesh.AsyncResult(s1.address, fut._mesh_task)
    assert not other_holder.done()
    s1._proc.kill()
    start = time.perf_counter()
    t.join(20)
    assert not t.is_alive()
    assert errors and isinstance(errors[0], mesh.MeshError), errors
    with pytest.raises(mesh.ServerUnavailable):
        fut.result(timeout=20)
    with pytest.raises(mesh.ServerUnavailable):
        other_holder.result(timeout=20)
    assert time.perf_counter() - start < 10


def test_proxy_passed_to_another_object_calls_the_same_actor(spawn_server):
    s1, s2 = spawn_server(port=0), spawn_server(port=0)
    store = Store(to_dist=on(s1))
    cons = Consumer(to_dist=on(s2))
    assert cons.call_on(store, 5) == 5
    assert store.add(1) == 6


def test_async_result_done_and_timeout(server):
    prod = Producer(to_dist=on(server))
    r = prod.make(5, delay=0.3)
    assert not r.done()
    with pytest.raises(mesh.CallTimeout):
        r.result(timeout=0.01)
    assert r.result(timeout=10) == b"ppppp"
    assert r.done()


def test_fetch_that_overtakes_its_task_waits_for_it(server):
    # A consumer's fetch can reach the producer before the call that makes the task
    # (different sockets): it must wait for the task, not answer "expired".
    servicer = server._servicer
    early = servicer.local_result("task-not-yet-here")
    assert not early.done()
    prod = Producer(to_dist=on(server))
    header = {"op": "call", "obj": prod._mesh_id, "m": "make", "chain": "c1", "task": "task-not-yet-here", "keep": 1}
    fut = mesh.client._client.get_client().request(server.address, header, [[7], {}])
    fut.result(10)
    reply = early.result(10)
    assert mesh.client._replies.decode_reply(reply, server.address) == b"p" * 7


def test_fetch_of_a_task_that_never_comes_expires_after_a_grace(server, monkeypatch):
    from mesh.server import _results

    monkeypatch.setattr(_results, "_EARLY_GRACE", 0.3)
    t = time.perf_counter()
    with pytest.raises(mesh.ResultExpired):
        mesh.AsyncResult(server.address, "never-made").result(timeout=10)
    assert time.perf_counter() - t < 5


def test_fetch_for_an_earlier_run_of_the_server_expires_at_once(server, spawn_server, monkeypatch):
    from mesh.client._future import _rebuild
    from mesh.server import _results

    monkeypatch.setattr(_results, "_EARLY_GRACE", 600.0)  # waiting for the task would time out below
    ghost = _rebuild(False, server.address, "made-before-a-restart", None, None, "an-earlier-run")
    with pytest.raises(mesh.ResultExpired):
        ghost.result(timeout=20)
    # futures carry the run of the server that made them, also through a pickle and over the network
    other = spawn_server()
    prod = Producer(to_dist={"host": other.host, "port": other.port})
    f = prod.make(3)
    copy = pickle.loads(pickle.dumps(f))
    assert copy._mesh_inst == f._mesh_inst and f._mesh_inst
    assert copy.result(timeout=10) == b"ppp"
    remote_ghost = _rebuild(False, other.address, "made-before-a-restart", None, None, "an-earlier-run")
    with pytest.raises(mesh.ResultExpired):
        remote_ghost.result(timeout=3)  # under the subprocess server's 5 s grace: it must not wait


def _own_server(**kw):
    return mesh.AgentServer(port=0, advertise=False, **kw).launch(in_subprocess=False)


def test_a_held_result_read_late_gives_its_value_whatever_max_len():
    # Changed with issue 10 point 17 (was test_result_read_late_expires_even_if_it_came_with_the_reply,
    # which expected ResultExpired for the first result): max_len bounds only results that no live
    # future holds, and `first` is alive, so reading it late gives its value, from the reply or a fetch.
    srv = _own_server(max_len=2, max_expire_time=600)
    try:
        prod = Producer(to_dist={"host": srv.host, "port": srv.port})
        first = prod.make(5)
        big = prod.make(100_000)  # over the push limit: read by a fetch, late
        later = [prod.make(i) for i in range(3)]
        assert [f.result(timeout=10) for f in later] == [b"", b"p", b"pp"]
        assert first.result(timeout=10) == b"ppppp"
        assert big.result(timeout=10) == b"p" * 100_000
        other = mesh.AsyncResult(srv.address, first._mesh_task)  # another reader of a held result
        assert other.result(timeout=10) == b"ppppp"
        assert later[-1].result(timeout=10) == b"pp"
    finally:
        srv.shutdown()


def test_max_expire_time_bounds_only_results_nobody_holds():
    # Changed with issue 10 point 17: a held result outlives max_expire_time; a loose one does not.
    from conftest import wait_until

    srv = _own_server(max_expire_time=0.3)
    try:
        prod = Producer(to_dist={"host": srv.host, "port": srv.port})
        f = prod.make(4)
        loose = _loose_call(prod, 6)
        wait_until(lambda: srv._servicer.pool.get(loose) is None, timeout=10)
        with pytest.raises(mesh.ResultExpired):
            mesh.AsyncResult(srv.address, loose).result(timeout=10)
        assert srv._servicer.pool.get(f._mesh_task) is not None  # still held by `f`
        assert mesh.AsyncResult(srv.address, f._mesh_task).result(timeout=10) == b"pppp"
    finally:
        srv.shutdown()


def test_errors_keep_their_kind_through_a_consumer(server):
    where = {"host": server.host, "port": server.port}
    prod, cons = Producer(to_dist=where), Consumer(to_dist=where)
    with pytest.raises(mesh.RemoteError) as info:
        cons.size(prod.fail())  # the producer's RuntimeError, read by the consumer
    assert info.value.remote_type == "RuntimeError" and "producer failed" in str(info.value)
    srv = _own_server(max_len=1)
    try:
        p2 = Producer(to_dist={"host": srv.host, "port": srv.port})
        old = mesh.AsyncResult(srv.address, _loose_call(p2, 3))  # a result nobody holds (issue 10, point 17)
        _loose_call(p2, 1)  # evicts `old` from a pool of 1
        with pytest.raises(mesh.ResultExpired):
            cons.size(old)
    finally:
        srv.shutdown()


def test_bool_of_an_async_result_is_the_bool_of_its_value(server):
    c = Store(to_dist={"host": server.host, "port": server.port})
    prod = Producer(to_dist={"host": server.host, "port": server.port})
    assert not prod.make(0) and prod.make(2)
    assert c.add(0) == 0


def test_editing_a_placeholder_edits_the_message_everywhere(server):
    where = {"host": server.host, "port": server.port}
    a, b = Echo("a", to_dist=where), Echo("b", to_dist=where)
    x = a(Msg("user", "orig", role="user"))
    x.content = "edited"
    assert x.content == "edited" and x.to_dict()["content"] == "edited"
    assert b(x).content == "edited"


def test_agent_keeps_its_id_when_moved_to_a_server(server):
    local = Echo("z")
    remote = local.to_dist(host=server.host, port=server.port)
    assert remote.agent_id == local.agent_id


def test_missing_remote_attribute_is_an_attribute_error(server):
    c = Store(to_dist={"host": server.host, "port": server.port})
    assert c.total == 0
    assert not hasattr(c, "missing") and getattr(c, "missing", 7) == 7
    with pytest.raises(mesh.RemoteError) as info:
        c.missing
    assert isinstance(info.value, AttributeError) and info.value.remote_type == "AttributeError"


def test_scalar_async_results_act_as_their_values(server):
    c = Store(to_dist={"host": server.host, "port": server.port})
    prod = Producer(to_dist={"host": server.host, "port": server.port})
    n = prod.make(3)
    assert n == b"ppp" and n != b"" and n + b"!" == b"ppp!" and b">" + n == b">ppp"
    assert f"{n!s}" == "b'ppp'" and {n: 1}[n] == 1  # still hashable by identity
    assert c.add(1) == 1


def test_late_fetch_is_answered_even_if_the_pool_fails(server, monkeypatch):
    from mesh.server import _results

    monkeypatch.setattr(_results, "_EARLY_GRACE", 0.2)
    pool = server._servicer.pool
    calls = {"n": 0}
    real_get = pool.get

    def flaky_get(task):
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("pool down")
        return real_get(task)

    monkeypatch.setattr(pool, "get", flaky_get)
    with pytest.raises(mesh.ServerUnavailable, match="pool down"):
        mesh.AsyncResult(server.address, "never-arrives").result(timeout=10)
