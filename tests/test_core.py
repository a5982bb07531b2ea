"""Remote objects: creation, sync and async calls, attributes, errors, actor semantics."""

from __future__ import annotations

import threading
import time

import pytest

import mesh
from mesh import RpcMeta, async_func, sync_func


class Counter(metaclass=RpcMeta):
    def __init__(self, start: int = 0, label: str = "c") -> None:
        self.value = start
        self.label = label
        self.log: list[int] = []

    def add(self, n: int = 1) -> int:
        self.value += n
        return self.value

    @async_func
    def slow_add(self, n: int, delay: float) -> int:
        time.sleep(delay)
        self.log.append(n)
        self.value += n
        return self.value

    @async_func
    def composite(self) -> dict:
        return {"a": 1, "b": [1, 2, 3], "c": "hello"}

    @sync_func
    def echo(self, *args, **kwargs):
        return args, kwargs

    def fail(self, msg: str) -> None:
        raise ValueError(msg)

    @async_func
    def fail_async(self) -> None:
        raise KeyError("missing")

    def sleep(self, s: float) -> float:
        time.sleep(s)
        return s

    def _secret(self) -> str:
        return "no"

    @property
    def doubled(self) -> int:
        return self.value * 2


def test_to_dist_host_port_and_sync_call(server):
    c = Counter(5).to_dist(host=server.host, port=server.port)
    assert isinstance(c, mesh.RpcObject)
    assert c.add(2) == 7
    assert c.add() == 8
    assert c.value == 8  # attribute read returns the remote value
    assert c.doubled == 16  # properties too


@pytest.mark.parametrize("form", ["distconf", "dict", "address"])
def test_constructor_to_dist_forms(server, form):
    conf = {
        "distconf": mesh.DistConf(host=server.host, port=server.port),
        "dict": {"host": "localhost", "port": str(server.port)},  # AgentScope's docs pass the port as a string
        "address": {"host": server.address},
    }[form]
    c = Counter(3, to_dist=conf)
    assert isinstance(c, mesh.RpcObject)
    assert c.add(1) == 4


CONSTRUCTED: list[int] = []


class Probe(metaclass=RpcMeta):
    def __init__(self) -> None:
        import os

        CONSTRUCTED.append(os.getpid())

    def pid(self) -> int:
        import os

        return os.getpid()


def test_constructor_runs_only_on_the_server(server, spawn_server):
    CONSTRUCTED.clear()
    p = Probe(to_dist={"host": server.host, "port": server.port})
    assert isinstance(p, mesh.RpcObject)
    assert p.pid() > 0  # (its first use waits for the creation's answer)
    assert len(CONSTRUCTED) == 1  # the in-process server built it once; the caller did not
    srv = spawn_server(port=0)
    q = Probe(to_dist={"host": srv.host, "port": srv.port})
    assert q.pid() == srv.pid
    assert len(CONSTRUCTED) == 1  # built in the server process only


def test_values_round_trip(server):
    c = Counter(to_dist={"host": server.host, "port": server.port})
    big = b"x" * 300_000
    args, kwargs = c.echo(1, (2, 3), None, big, {"k": [1.5, "s"]}, key=bytearray(b"yz"))
    assert args == (1, (2, 3), None, big, {"k": [1.5, "s"]})
    assert kwargs == {"key": bytearray(b"yz")}


def test_async_returns_at_once_and_result(server):
    c = Counter(to_dist={"host": server.host, "port": server.port})
    t = time.perf_counter()
    r = c.slow_add(5, 0.3)
    issued = time.perf_counter() - t
    assert isinstance(r, mesh.AsyncResult)
    assert not r.done()
    assert r.result(timeout=10) == 5
    assert r.done()
    assert issued < (time.perf_counter() - t) / 2  # returned well before the work finished


def test_async_composite_resolves_on_access(server):
    c = Counter(to_dist={"host": server.host, "port": server.port})
    r = c.composite()
    assert r["a"] == 1
    assert len(c.composite()) == 3
    assert "c" in c.composite()
    assert sorted(c.composite()) == ["a", "b", "c"]
    assert c.composite().get("c") == "hello"  # public attribute access resolves too


def test_result_timeout_raises_call_timeout(server):
    c = Counter(to_dist={"host": server.host, "port": server.port})
    r = c.slow_add(1, 1.0)
    with pytest.raises(mesh.CallTimeout):
        r.result(timeout=0.05)
    with pytest.raises(TimeoutError):
        r.result(timeout=0.01)
    assert r.result(timeout=10) == 1  # still arrives


def test_remote_exception_keeps_type_and_traceback_and_server_survives(server):
    c = Counter(to_dist={"host": server.host, "port": server.port})
    with pytest.raises(mesh.RemoteError) as info:
        c.fail("boom")
    assert info.value.remote_type == "ValueError"
    assert "boom" in str(info.value)
    assert "Traceback" in info.value.remote_traceback and "fail" in info.value.remote_traceback
    with pytest.raises(mesh.RemoteError) as info2:
        c.fail_async().result(timeout=5)
    assert info2.value.remote_type == "KeyError"
    assert c.add(1) == 1  # still serving


def test_private_names_are_never_forwarded(server):
    c = Counter(to_dist={"host": server.host, "port": server.port})
    with pytest.raises(AttributeError, match="private"):
        c._secret()
    with pytest.raises(AttributeError, match="private"):
        c._anything
    with pytest.raises(AttributeError):
        c.value = 3


def test_constructor_error_is_remote_error(server):
    with pytest.raises(mesh.RemoteError) as info:
        Counter("not-a-number-but-ok", to_dist={"host": server.host, "port": server.port}).add(1)
    assert info.value.remote_type == "TypeError"


def test_calls_to_one_object_run_in_arrival_order(server):
    c = Counter(to_dist={"host": server.host, "port": server.port})
    results = [c.slow_add(i, 0.02 if i % 2 else 0.0) for i in range(10)]
    assert [r.result(timeout=10) for r in results] == [sum(range(i + 1)) for i in range(10)]
    assert c.log == list(range(10))


def test_different_objects_run_concurrently(spawn_server):
    srv = spawn_server(port=0, capacity=4)
    objs = [Counter(to_dist={"host": srv.host, "port": srv.port}) for _ in range(4)]
    objs[0].sleep(0.01)  # warm up
    t = time.perf_counter()
    objs[0].slow_add(1, 0.4).result(timeout=10)
    one = time.perf_counter() - t
    t = time.perf_counter()
    rs = [o.slow_add(1, 0.4) for o in objs]
    for r in rs:
        r.result(timeout=10)
    four = time.perf_counter() - t
    assert four < 2.0 * one  # 4 in parallel, not 4x


def test_capacity_bounds_concurrency(spawn_server):
    srv = spawn_server(port=0, capacity=1)
    objs = [Counter(to_dist={"host": srv.host, "port": srv.port}) for _ in range(3)]
    t = time.perf_counter()
    rs = [o.slow_add(1, 0.2) for o in objs]
    for r in rs:
        r.result(timeout=10)
    assert time.perf_counter() - t >= 0.55  # one at a time


def test_many_threads_call_at_once(server):
    c = Counter(to_dist={"host": server.host, "port": server.port})
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(50):
                c.add(1)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert c.value == 400


def test_unreachable_server_gives_server_unavailable_fast():
    t = time.perf_counter()
    with pytest.raises(mesh.ServerUnavailable):
        Counter(to_dist={"host": "127.0.0.1", "port": 1})
    assert time.perf_counter() - t < 5


def test_dead_server_fails_pending_call(spawn_server):
    srv = spawn_server(port=0, capacity=2)
    c = Counter(to_dist={"host": srv.host, "port": srv.port})
    r = c.slow_add(1, 30)
    srv._proc.kill()
    with pytest.raises(mesh.ServerUnavailable):
        r.result(timeout=20)
    with pytest.raises(mesh.ServerUnavailable):
        c.add(1)


def test_deleted_or_unknown_object_gives_agent_not_found(server):
    c = Counter(to_dist={"host": server.host, "port": server.port})
    ghost = mesh.RpcObject(server.address, "no-such-id", "Counter", dict(Counter._mesh_methods))
    with pytest.raises(mesh.AgentNotFound):
        ghost.add(1)
    assert c.add(1) == 1


def test_in_subprocess_launch_and_port_zero(spawn_server):
    srv = spawn_server(port=0)
    assert srv.port > 0
    assert srv.address == f"tcp://127.0.0.1:{srv.port}"
    c = Counter(to_dist={"host": srv.address})
    import os

    assert c.add(1) == 1
    assert srv.pid != os.getpid()


def test_shutdown_is_idempotent():
    srv = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=False)
    srv.shutdown()
    srv.shutdown()
    with pytest.raises(mesh.ServerUnavailable):
        Counter(to_dist={"host": srv.host, "port": srv.port})


def test_context_manager():
    with mesh.AgentServer(port=0, advertise=False) as srv:
        assert Counter(to_dist={"host": srv.host, "port": srv.port}).add(2) == 2


def test_bad_constructor_keyword():
    with pytest.raises(TypeError, match="to_dist"):
        Counter(to_dist="yes please")


def test_sync_call_after_async_calls_keeps_caller_order(server):
    c = Counter(to_dist={"host": server.host, "port": server.port})
    c.slow_add(1, 0.2)  # in flight
    c.slow_add(2, 0.0)
    assert c.add(10) == 13  # ran after both, not before (sync calls take a faster socket otherwise)
    assert c.add(1) == 14


def test_sync_calls_from_threads_that_end_release_their_sockets(server):
    c = Counter(to_dist={"host": server.host, "port": server.port})
    node = mesh.client._client.get_client().node
    for _ in range(5):
        t = threading.Thread(target=c.add, args=(1,))
        t.start()
        t.join(10)
    import gc

    gc.collect()
    assert c.value == 5
    assert len([d for d in node._directs if not d.closed]) <= 1  # only this thread's socket stays


def test_class_the_server_cannot_import_travels_by_value(spawn_server, tmp_path, monkeypatch):
    srv = spawn_server(port=0)  # started before the module exists on any path it knows
    (tmp_path / "private_agents.py").write_text(
        "import mesh\n"
        "class Helper:\n"
        "    def twice(self, x):\n"
        "        return 2 * x\n"
        "class Private(mesh.AgentBase):\n"
        "    def reply(self, x=None):\n"
        "        return mesh.Msg(self.name, Helper().twice(x.content))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import private_agents

    agent = private_agents.Private("p", to_dist={"host": srv.host, "port": srv.port})
    assert agent(mesh.Msg("u", 21)).content == 42
    # a --no-code server refuses it
    strict = spawn_server(port=0, no_code=True)
    refused = private_agents.Private("p", to_dist={"host": strict.host, "port": strict.port})
    with pytest.raises(mesh.RemoteError, match="no-code"):  # at its first use: to_dist() did not wait
        refused(mesh.Msg("u", 1))


def _has_ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_server_on_ipv6_loopback():
    srv = mesh.AgentServer(host="::1", port=0, advertise=False).launch(in_subprocess=False)
    try:
        assert srv.address.startswith("tcp://[::1]:")
        c = Counter(2, to_dist={"host": "::1", "port": srv.port})
        assert c.add(3) == 5
        assert Counter(1).to_dist(host=srv.address).add(1) == 2
    finally:
        srv.shutdown()


def test_port_without_host_means_this_machine(server):
    c = Counter(4).to_dist(port=server.port)
    assert c._mesh_address == server.address and c.add(1) == 5
    d = Counter(1, to_dist={"port": server.port})
    assert d._mesh_address == server.address


def test_agentscope_to_dist_options_are_accepted(server):
    c = Counter(to_dist={"host": server.host, "port": server.port, "lazy_launch": False, "max_timeout_seconds": 5})
    assert c.add(2) == 2
    with pytest.raises(TypeError, match="unknown to_dist option"):
        Counter(to_dist={"host": server.host, "port": server.port, "colour": "blue"})


def test_a_proxy_does_not_move(server, spawn_server):
    c = Counter(to_dist={"host": server.host, "port": server.port})
    assert c.to_dist() is c and c.to_dist(host=server.address) is c
    other = spawn_server()
    with pytest.raises(ValueError, match="does not move"):
        c.to_dist(host=other.host, port=other.port)


def test_init_call_timeout_applies_after_calls_were_made(server):
    c = Counter(to_dist={"host": server.host, "port": server.port})
    assert c.add(1) == 1
    mesh.init(call_timeout=0.3)
    with pytest.raises(mesh.CallTimeout):
        c.sleep(1.5)


def test_port_in_use_says_so(server):
    with pytest.raises(OSError, match="in use"):
        mesh.AgentServer(port=server.port, advertise=False).launch(in_subprocess=False)
    with pytest.raises(RuntimeError, match="in use"):
        mesh.AgentServer(port=server.port, advertise=False).launch(in_subprocess=True)


def test_async_int_passed_to_another_call_adds_up(server):
    where = {"host": server.host, "port": server.port}
    a, b = Counter(to_dist=where), Counter(10, to_dist=where)
    n = a.slow_add(5, 0.0)  # an AsyncResult of 5
    assert b.add(n) == 15  # the consumer's `self.value += n` waits for it


def test_host_that_does_not_resolve_says_so():
    with pytest.raises(mesh.ServerUnavailable, match="cannot resolve"):
        Counter(to_dist={"host": "no-such-host.invalid", "port": 12001})
