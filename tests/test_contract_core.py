"""Acceptance tests of API.md (first release): messages, agents, remote objects, servers, errors.

Black-box: only public names, as a user following /work/shared/API.md would write them.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

import mesh
from conftest import wait_until


# ---------------------------------------------------------------- Messages

def test_msg_fields_and_defaults():
    m = mesh.Msg("alice", "hello")
    assert m.name == "alice" and m.content == "hello"
    assert m.role == "assistant" and m.url is None and m.metadata is None
    assert isinstance(m.id, str) and m.id
    assert m.timestamp is not None
    assert mesh.Msg("a", "b").id != m.id


def test_msg_full_signature_and_extra():
    m = mesh.Msg("bob", {"k": 1}, role="user", url="http://x/y.png", metadata={"m": 2}, mood="happy")
    assert m.role == "user" and m.url == "http://x/y.png" and m.metadata == {"m": 2}
    assert m.mood == "happy"


def test_msg_dict_round_trip_and_equality():
    m = mesh.Msg("bob", [1, 2], role="system", metadata={"a": 1}, extra_field=3)
    d = m.to_dict()
    assert isinstance(d, dict)
    m2 = mesh.Msg.from_dict(d)
    assert m2 == m
    assert m2.id == m.id and m2.timestamp == m.timestamp and m2.extra_field == 3
    other = mesh.Msg.from_dict({**d, "content": [1, 3]})
    assert other != m


# ---------------------------------------------------------------- Remote objects

class Box(metaclass=mesh.RpcMeta):
    """A value on a server."""

    def __init__(self, value=0, tag="t"):
        self.value = value
        self.tag = tag
        self.pid = os.getpid()

    def get(self):
        return self.value

    def set(self, v):
        self.value = v
        return v

    def where(self):
        return os.getpid()

    @mesh.async_func
    def slow_get(self, delay):
        time.sleep(delay)
        return self.value

    @mesh.sync_func
    def explicit_sync(self):
        return "sync"

    def composite(self):
        return {"a": 1}

    @mesh.async_func
    def as_dict(self):
        return {"a": 1, "b": [1, 2]}

    @mesh.async_func
    def as_list(self):
        return [1, 2, 3]

    @mesh.async_func
    def as_obj(self):
        return mesh.Msg("o", "obj-content")

    def boom(self, msg):
        raise ValueError(msg)

    @mesh.async_func
    def boom_async(self, msg):
        raise KeyError(msg)

    def plus_one(self, x):
        return x + 1

    def _private(self):
        return "no"

    def call_other(self, other):
        return other.get()

    def add_to_other(self, other, n):
        return other.set(other.get() + n)


def test_rpcmeta_class_has_to_dist_and_sync_call(server):
    assert isinstance(Box, mesh.RpcMeta)
    b = Box(4).to_dist(host=server.host, port=server.port)
    assert isinstance(b, mesh.RpcObject)
    assert b.get() == 4
    assert b.set(9) == 9
    assert b.value == 9  # public attribute: the remote value
    assert b.explicit_sync() == "sync"


@pytest.mark.parametrize("form", ["true_child", "distconf", "dict"])
def test_constructor_to_dist_forms(server, form):
    conf = {
        "true_child": True,
        "distconf": mesh.DistConf(host=server.host, port=server.port),
        "dict": {"host": server.host, "port": server.port},
    }[form]
    b = Box(7, to_dist=conf)
    assert isinstance(b, mesh.RpcObject)
    assert b.get() == 7


def test_distconf_is_a_dict_of_to_dist_arguments():
    conf = mesh.DistConf(host="h", port=1, checkpoint=True)
    assert isinstance(conf, dict)
    assert conf["host"] == "h" and conf["port"] == 1 and conf["checkpoint"] is True
    assert mesh.DistConf()["host"] is None and mesh.DistConf()["port"] is None


def test_to_dist_without_host_uses_one_child_server_reused():
    # discovery is off in the tests (MESH_DISCOVERY=0): a child server, started once and reused
    a = Box(1).to_dist()
    b = Box(2).to_dist()
    c = Box(3, to_dist=True)
    assert a.where() == b.where() == c.where() != os.getpid()
    assert (a.get(), b.get(), c.get()) == (1, 2, 3)


def test_to_dist_of_existing_object_uses_constructor_arguments(server):
    local = Box(5, tag="x")
    local.value = 99  # state changed after construction does not travel
    remote = local.to_dist(host=server.host, port=server.port)
    assert remote.get() == 5
    assert remote.tag == "x"


def test_constructor_to_dist_constructs_only_on_server():
    # a child server is a subprocess: the constructor's pid is the server's
    b = Box(1, to_dist=True)
    assert b.pid != os.getpid()


def test_class_travels_by_value(spawn_server):
    srv = spawn_server(port=0)

    class Local(metaclass=mesh.RpcMeta):  # defined in a function: no server can import it
        def __init__(self, k):
            self.k = k

        def double(self):
            return self.k * 2

    obj = Local(21, to_dist={"host": srv.host, "port": srv.port})
    assert obj.double() == 42


def test_custom_agent_classes_and_agent_dir(tmp_path):
    (tmp_path / "contract_agent_mod.py").write_text(
        "import mesh\n"
        "class DirAgent(mesh.AgentBase):\n"
        "    def reply(self, x):\n"
        "        return mesh.Msg(self.name, 'from-dir')\n"
    )
    srv = mesh.AgentServer(port=0, advertise=False, agent_dir=str(tmp_path),
                           custom_agent_classes=[Box]).launch(in_subprocess=False)
    try:
        b = Box(3, to_dist={"host": srv.host, "port": srv.port})
        assert b.get() == 3
    finally:
        srv.shutdown()


def test_async_func_returns_async_result_at_once(server):
    b = Box(3).to_dist(host=server.host, port=server.port)
    t0 = time.monotonic()
    fut = b.slow_get(1.0)
    assert time.monotonic() - t0 < 0.8
    assert isinstance(fut, mesh.AsyncResult)
    assert fut.result(timeout=10) == 3
    assert fut.done()


def test_private_name_never_forwarded(server):
    b = Box().to_dist(host=server.host, port=server.port)
    with pytest.raises(AttributeError) as info:
        b._private()
    assert "_private" in str(info.value)
    with pytest.raises(AttributeError) as info:
        b._anything  # noqa: B018
    assert "_anything" in str(info.value)


def test_proxy_passed_to_another_remote_object_calls_same_actor(server, spawn_server):
    other_srv = spawn_server(port=0)
    target = Box(10).to_dist(host=server.host, port=server.port)
    caller = Box(0).to_dist(host=other_srv.host, port=other_srv.port)
    assert caller.call_other(target) == 10
    assert caller.add_to_other(target, 5) == 15
    assert target.get() == 15


ORDER: list[int] = []
RUNNING = [0]
MAX_RUNNING = [0]
LOCK = threading.Lock()


class Recorder(metaclass=mesh.RpcMeta):
    @mesh.async_func
    def step(self, i):
        with LOCK:
            RUNNING[0] += 1
            MAX_RUNNING[0] = max(MAX_RUNNING[0], RUNNING[0])
        time.sleep(0.005)
        ORDER.append(i)
        with LOCK:
            RUNNING[0] -= 1
        return i


def test_actor_semantics_one_at_a_time_in_order(server):
    ORDER.clear()
    MAX_RUNNING[0] = 0
    r = Recorder().to_dist(host=server.host, port=server.port)
    futs = [r.step(i) for i in range(40)]
    assert [f.result(timeout=20) for f in futs] == list(range(40))
    assert ORDER == list(range(40))
    assert MAX_RUNNING[0] == 1


GATE = threading.Event()
ENTERED = [0]


class Waiter(metaclass=mesh.RpcMeta):
    @mesh.async_func
    def wait_gate(self):
        with LOCK:
            ENTERED[0] += 1
        return GATE.wait(10)


def test_different_objects_run_concurrently_up_to_capacity():
    GATE.clear()
    ENTERED[0] = 0
    srv = mesh.AgentServer(port=0, capacity=3, advertise=False).launch(in_subprocess=False)
    try:
        objs = [Waiter(to_dist={"host": srv.host, "port": srv.port}) for _ in range(5)]
        futs = [o.wait_gate() for o in objs]
        wait_until(lambda: ENTERED[0] >= 3, timeout=10)
        time.sleep(0.3)  # give a fourth call the chance to (wrongly) start
        assert ENTERED[0] == 3
        GATE.set()
        assert all(f.result(timeout=10) for f in futs)
    finally:
        GATE.set()
        srv.shutdown()


# ---------------------------------------------------------------- AgentBase

class Echo(mesh.AgentBase):
    def reply(self, x):
        self.observe(x)
        return mesh.Msg(self.name, f"echo:{x.content}")


def test_agentbase_local():
    a = Echo("ann", extra=1)
    assert a.name == "ann"
    assert isinstance(a.agent_id, str) and a.agent_id
    assert a.memory == []
    out = a(mesh.Msg("u", "hi", role="user"))
    assert isinstance(out, mesh.Msg) and out.content == "echo:hi"
    a.observe(mesh.Msg("u", "seen"))
    assert [m.content for m in a.memory] == ["hi", "seen"]
    assert all(isinstance(m, mesh.Msg) for m in a.memory)
    state = a.state_dict()
    b = Echo("ann")
    b.load_state_dict(state)
    assert [m.content for m in b.memory] == ["hi", "seen"]
    assert "hi" in repr(state)  # the memory is in the state


def test_agentbase_remote_returns_placeholder(server):
    a = Echo("bob", to_dist={"host": server.host, "port": server.port})
    assert a.name == "bob"
    assert isinstance(a.agent_id, str)
    p = a(mesh.Msg("u", "one"))
    assert isinstance(p, mesh.Placeholder) and isinstance(p, mesh.Msg)
    assert p.content == "echo:one"
    r = a.reply(mesh.Msg("u", "two"))
    assert isinstance(r, mesh.Placeholder)
    assert r.result(timeout=10).content == "echo:two"
    assert [m.content for m in a.memory] == ["one", "two"]
    state = a.state_dict()
    assert "one" in repr(state) and "two" in repr(state)


# ---------------------------------------------------------------- Servers

def test_agent_server_signature_defaults():
    import inspect

    sig = inspect.signature(mesh.AgentServer)
    expected = {
        "host": "127.0.0.1", "port": 0, "capacity": 32, "custom_agent_classes": (), "agent_dir": None,
        "pool_type": "local", "redis_url": None, "max_expire_time": 7200, "max_len": 10000,
        "max_message_size": 32 * 2**20, "advertise": True, "name": None,
    }
    for name, default in expected.items():
        assert name in sig.parameters, name
        assert sig.parameters[name].default == default, name
    for name in list(expected)[2:]:
        assert sig.parameters[name].kind == inspect.Parameter.KEYWORD_ONLY, name


def test_agent_server_launch_properties():
    assert mesh.RpcAgentServerLauncher is mesh.AgentServer
    srv = mesh.AgentServer(port=0, advertise=False)
    ret = srv.launch(in_subprocess=False)
    try:
        assert srv.host == "127.0.0.1"
        assert isinstance(srv.port, int) and srv.port > 0
        assert srv.address == f"tcp://127.0.0.1:{srv.port}"
        b = Box(1, to_dist={"host": srv.host, "port": srv.port})
        assert b.get() == 1
        assert ret is None or ret is srv
    finally:
        srv.shutdown()


def test_agent_server_in_subprocess_and_wait_until_terminate():
    srv = mesh.AgentServer(port=0, advertise=False)
    srv.launch(in_subprocess=True)
    try:
        b = Box(2, to_dist={"host": srv.host, "port": srv.port})
        assert b.where() != os.getpid()
    finally:
        srv.shutdown()
    done = threading.Event()
    threading.Thread(target=lambda: (srv.wait_until_terminate(), done.set()), daemon=True).start()
    assert done.wait(10)


def test_servers_discovered(monkeypatch):
    monkeypatch.setenv("MESH_DISCOVERY", "1")
    srv = mesh.AgentServer(port=0, advertise=True, name="contract-disc", capacity=5).launch(in_subprocess=False)
    try:
        def found():
            return [s for s in mesh.servers(timeout=1.0) if s.address == srv.address]

        infos = wait_until(found, timeout=10)
        info = infos[0]
        assert info.name == "contract-disc"
        assert info.address == f"tcp://{srv.host}:{srv.port}"
        assert info.capacity == 5
        assert isinstance(info.load, (int, float))
    finally:
        srv.shutdown()


def test_to_dist_without_host_spreads_over_discovered_servers(monkeypatch):
    monkeypatch.setenv("MESH_DISCOVERY", "1")
    mesh.init(discovery=True)
    a = mesh.AgentServer(port=0, advertise=True, capacity=4).launch(in_subprocess=False)
    b = mesh.AgentServer(port=0, advertise=True, capacity=4).launch(in_subprocess=False)
    try:
        wait_until(lambda: {a.address, b.address} <= {s.address for s in mesh.servers(timeout=1.0)}, timeout=10)
        objs = [Box(i).to_dist() for i in range(4)]
        assert [o.get() for o in objs] == [0, 1, 2, 3]
        mine = {o.where() for o in objs}
        assert mine == {os.getpid()}  # both servers are in this process: not on a child server
        counts = {}
        for srv in (a, b):
            counts[srv.address] = sum(1 for o in objs if srv.address in repr(o))
        assert counts[a.address] == 2 and counts[b.address] == 2, counts
    finally:
        a.shutdown()
        b.shutdown()


def test_servers_default_timeout():
    import inspect

    assert inspect.signature(mesh.servers).parameters["timeout"].default == 1.0


def test_init_and_shutdown():
    mesh.init()
    b = Box(1, to_dist=True)
    assert b.get() == 1
    mesh.shutdown()
    mesh.shutdown()  # idempotent


# ---------------------------------------------------------------- Errors

def test_error_hierarchy():
    for name in ["RemoteError", "ServerUnavailable", "CallTimeout", "ResultExpired", "MessageTooLarge",
                 "AgentNotFound", "AuthenticationError", "Cancelled", "DeadlineExceeded"]:
        cls = getattr(mesh, name)
        assert issubclass(cls, mesh.MeshError), name
        assert issubclass(cls, Exception)
    assert issubclass(mesh.CallTimeout, TimeoutError)
    assert issubclass(mesh.DeadlineExceeded, mesh.CallTimeout)


def test_remote_error_attributes(server):
    b = Box().to_dist(host=server.host, port=server.port)
    with pytest.raises(mesh.RemoteError) as info:
        b.boom("bad thing")
    err = info.value
    assert err.remote_type and "ValueError" in err.remote_type
    assert "bad thing" in str(err)
    assert "boom" in err.remote_traceback
    # the server keeps serving
    assert b.get() == 0


def test_async_error_on_access(server):
    b = Box().to_dist(host=server.host, port=server.port)
    fut = b.boom_async("kk")
    with pytest.raises(mesh.RemoteError):
        fut.result(timeout=10)
    with pytest.raises(KeyError):
        fut.result(timeout=10)


def test_server_unavailable():
    srv = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=False)
    b = Box(to_dist={"host": srv.host, "port": srv.port})
    srv.shutdown()
    with pytest.raises(mesh.ServerUnavailable):
        b.get()


def test_server_unavailable_on_creation_at_closed_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(mesh.ServerUnavailable):
        Box(to_dist={"host": "127.0.0.1", "port": port})


def test_call_timeout(server):
    b = Box().to_dist(host=server.host, port=server.port)
    fut = b.slow_get(1.5)
    with pytest.raises(mesh.CallTimeout):
        fut.result(timeout=0.1)
    with pytest.raises(TimeoutError):
        fut.result(timeout=0.05)
    assert fut.result(timeout=10) == 0


def test_message_too_large():
    srv = mesh.AgentServer(port=0, advertise=False, max_message_size=64 * 1024).launch(in_subprocess=False)
    try:
        b = Box(to_dist={"host": srv.host, "port": srv.port})
        with pytest.raises(mesh.MessageTooLarge):
            b.set(b"x" * (200 * 1024))
        assert b.get() == 0
    finally:
        srv.shutdown()


def test_agent_not_found(server):
    b = Box().to_dist(host=server.host, port=server.port)
    mesh.delete(b)
    with pytest.raises(mesh.AgentNotFound):
        b.get()


def test_result_expired_loose_result():
    # a future pickled elsewhere than into call arguments is "loose": max_len bounds it
    # once no live future holds it (API.md, Futures + asyncio "Scale without surprises")
    import pickle

    srv = mesh.AgentServer(port=0, advertise=False, max_len=2).launch(in_subprocess=False)
    try:
        b = Box(1, to_dist={"host": srv.host, "port": srv.port})
        fut = b.slow_get(0)
        data = pickle.dumps(fut)
        fut.result(timeout=10)
        del fut
        import gc

        gc.collect()
        for _ in range(5):
            f2 = b.slow_get(0)
            pickle.dumps(f2)
            f2.result(timeout=10)
            del f2
        gc.collect()
        loose = pickle.loads(data)
        t0 = time.monotonic()
        with pytest.raises(mesh.ResultExpired):
            loose.result(timeout=10)
        assert time.monotonic() - t0 < 8
    finally:
        srv.shutdown()


def test_result_expired_after_producer_restart():
    srv = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=True)
    port = srv.port
    b = Box(4, to_dist={"host": srv.host, "port": port})
    fut = b.slow_get(0)
    assert fut.result(timeout=10) == 4
    srv.shutdown()
    srv2 = mesh.AgentServer(port=port, advertise=False).launch(in_subprocess=False)
    reader = Box(to_dist={"host": srv2.host, "port": srv2.port})
    try:
        t0 = time.monotonic()
        with pytest.raises(mesh.ResultExpired):
            _read_remote(reader, fut)
        assert time.monotonic() - t0 < 8
    finally:
        srv2.shutdown()


def _read_remote(reader, fut):
    # a remote consumer given the old future fetches it from the (restarted) producer
    return reader.plus_one(fut)


# ---------------------------------------------------------------- Security

def test_non_loopback_server_without_secret_refuses():
    with pytest.raises(Exception) as info:
        mesh.AgentServer(host="0.0.0.0", port=0, advertise=False).launch(in_subprocess=False)
    assert isinstance(info.value, (mesh.MeshError, ValueError, RuntimeError, PermissionError))
    assert "secret" in str(info.value).lower()


def test_secret_mismatch_gives_authentication_error(monkeypatch):
    monkeypatch.setenv("MESH_SECRET", "server-secret-1234567890")
    mesh.init(secret="server-secret-1234567890")
    srv = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=True)
    try:
        b = Box(3, to_dist={"host": srv.host, "port": srv.port})
        assert b.get() == 3  # same secret: works
        mesh.shutdown()
        monkeypatch.setenv("MESH_SECRET", "other-secret-0987654321")
        mesh.init(secret="other-secret-0987654321")
        with pytest.raises(mesh.AuthenticationError):
            Box(3, to_dist={"host": srv.host, "port": srv.port})
        mesh.shutdown()
        monkeypatch.delenv("MESH_SECRET")
        mesh.init(secret=None)
        with pytest.raises(mesh.AuthenticationError):
            Box(3, to_dist={"host": srv.host, "port": srv.port})
    finally:
        srv.shutdown()
