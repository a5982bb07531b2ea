"""Acceptance tests of API.md, third pass: futures under timeouts, bad input, wait/as_completed details.

Black-box: only public names, as a user following /work/shared/API.md would write them.
"""

from __future__ import annotations

import threading
import time

import pytest

import mesh


class Worker(metaclass=mesh.RpcMeta):
    """A remote object with slow, failing and odd-valued methods."""

    def __init__(self, value=0):
        self.value = value
        self.calls = 0

    def get(self):
        self.calls += 1
        return self.value

    def echo(self, x):
        return x

    @mesh.async_func
    def slow(self, delay, v=None):
        time.sleep(delay)
        return self.value if v is None else v

    def slow_sync(self, delay):
        time.sleep(delay)
        return "done"

    def unpicklable_result(self):
        return threading.Lock()


class Talker(mesh.AgentBase):
    """An agent whose reply takes as long as the message asks."""

    def reply(self, x):
        time.sleep(float(x.content))
        return mesh.Msg(self.name, f"after {x.content}")


def _remote(cls, srv, *args, **kwargs):
    return cls(*args, **kwargs, to_dist={"host": srv.host, "port": srv.port})


def test_result_timeout_is_call_timeout_and_nothing_is_lost(server):
    w = _remote(Worker, server, 5)
    fut = w.slow(1.0)
    t0 = time.monotonic()
    with pytest.raises(mesh.CallTimeout) as ei:
        fut.result(timeout=0.1)
    assert time.monotonic() - t0 < 0.9
    assert isinstance(ei.value, TimeoutError) and isinstance(ei.value, mesh.MeshError)
    assert not fut.done()
    assert fut.result(timeout=10) == 5  # the value still arrives after a timed-out read
    assert fut.done()


def test_placeholder_result_timeout_then_value(server):
    agent = _remote(Talker, server, "tim")
    ph = agent(mesh.Msg("user", "1.0"))
    assert isinstance(ph, mesh.Placeholder)
    with pytest.raises(mesh.CallTimeout):
        ph.result(timeout=0.1)
    msg = ph.result(timeout=10)
    assert isinstance(msg, mesh.Msg) and msg.content == "after 1.0" and msg.name == "tim"
    assert ph.content == "after 1.0"  # the placeholder's own fields agree


def test_placeholder_fields_equal_its_result(server):
    agent = _remote(Talker, server, "eq")
    ph = agent(mesh.Msg("user", "0"))
    msg = ph.result(timeout=10)
    assert (ph.name, ph.content, ph.role) == (msg.name, msg.content, msg.role)
    assert ph.id == msg.id


def test_wait_keeps_input_order_and_returns_the_same_objects(server):
    ws = [_remote(Worker, server, i) for i in range(3)]
    futs = [ws[0].slow(0.6), ws[1].slow(0.0), ws[2].slow(0.3)]
    done, pending = mesh.wait(futs, num_returns=3, timeout=10)
    assert isinstance(done, list) and isinstance(pending, list)
    assert pending == []
    # like ray.wait: the order of the input list is kept, and the elements are the futures passed in
    assert [id(f) for f in done] == [id(f) for f in futs]
    assert [f.result() for f in done] == [0, 1, 2]


def test_wait_timeout_returns_partial_and_as_completed_yields_inputs(server):
    ws = [_remote(Worker, server, i) for i in range(2)]
    fast, slow = ws[0].slow(0.0), ws[1].slow(1.5)
    done, pending = mesh.wait([slow, fast], num_returns=2, timeout=0.8)
    assert [id(f) for f in done] == [id(fast)] and [id(f) for f in pending] == [id(slow)]
    order = list(mesh.as_completed([slow, fast], timeout=10))
    assert {id(f) for f in order} == {id(slow), id(fast)}
    assert order[-1] is slow


def test_unpicklable_argument_is_a_clear_error_and_proxy_keeps_working(server):
    w = _remote(Worker, server, 3)
    with pytest.raises(Exception) as ei:
        w.echo(threading.Lock())
    text = str(ei.value).lower()
    assert "lock" in text or "pickle" in text or "serial" in text, str(ei.value)
    assert w.get() == 3  # nothing lost: the proxy and the object still serve
    fut = w.slow(0.0)
    assert fut.result(timeout=10) == 3


def test_unpicklable_result_is_a_clear_error_and_object_keeps_serving(server):
    w = _remote(Worker, server, 4)
    with pytest.raises(mesh.MeshError) as ei:
        w.unpicklable_result()
    text = str(ei.value).lower()
    assert "lock" in text or "pickle" in text or "serial" in text, str(ei.value)
    assert w.get() == 4


def test_missing_method_is_attribute_error(server):
    w = _remote(Worker, server, 1)
    with pytest.raises(AttributeError):
        w.no_such_method()
    assert w.get() == 1


def test_private_names_never_forwarded_even_dunders_of_the_class(server):
    w = _remote(Worker, server, 1)
    with pytest.raises(AttributeError) as ei:
        w._secret  # noqa: B018
    assert "_secret" in str(ei.value)
    assert w.calls == 0  # nothing was run remotely for it


def test_server_shutdown_twice_and_mesh_shutdown_twice_are_harmless(spawn_server):
    srv = spawn_server(port=0)
    w = _remote(Worker, srv, 2)
    assert w.get() == 2
    mesh.shutdown()
    mesh.shutdown()
    w2 = _remote(Worker, srv, 8)  # the mesh is usable again after shutdown
    assert w2.get() == 8
    srv.shutdown()
    srv.shutdown()
    with pytest.raises(mesh.ServerUnavailable):
        _remote(Worker, srv, 9).get()


def test_concurrent_callers_from_threads_on_one_proxy_keep_actor_semantics(server):
    w = _remote(Worker, server, 0)
    errors: list[BaseException] = []

    def hammer():
        try:
            for _ in range(20):
                w.get()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert w.calls == 80


def test_async_result_composite_protocols(server):
    w = _remote(Worker, server, 0)
    d = w.slow(0.2, {"a": 1, "b": 2})
    assert "a" in d and len(d) == 2 and d["b"] == 2 and sorted(d) == ["a", "b"]
    lst = w.slow(0.2, [3, 4, 5])
    assert list(lst) == [3, 4, 5] and lst[1] == 4 and 5 in lst
    obj = w.slow(0.2, mesh.Msg("n", "c"))
    assert obj.content == "c"


def test_remote_error_fields_are_useful(server):
    w = _remote(Worker, server, 0)

    class Boom(metaclass=mesh.RpcMeta):
        def go(self):
            raise KeyError("missing-key")

    b = _remote(Boom, server)
    with pytest.raises(mesh.RemoteError) as ei:
        b.go()
    err = ei.value
    assert "KeyError" in err.remote_type
    assert "missing-key" in err.remote_traceback and "Traceback" in err.remote_traceback
    assert isinstance(err, KeyError)
    assert w.get() == 0


def test_deadline_zero_or_passed_never_starts_a_call(server):
    w = _remote(Worker, server, 0)
    with mesh.deadline(0):
        # the project may refuse to send (raise at the call) or give a future that raises: both say it
        with pytest.raises(mesh.DeadlineExceeded):
            w.get.remote().result(timeout=5)
        with pytest.raises(mesh.DeadlineExceeded):
            w.slow(0.0).result(timeout=5)
        with pytest.raises(mesh.DeadlineExceeded):
            w.get()
    assert w.calls == 0  # none of them ran
    assert w.get() == 0 and w.calls == 1  # outside the block: no deadline any more


class Pid(metaclass=mesh.RpcMeta):
    def pid(self):
        import os

        return os.getpid()

    def total(self, xs):
        return sum(xs)

    def pick(self, d):
        return d["x"] + 1


def test_futures_nested_in_arguments_and_a_dead_producer(spawn_server):
    import os
    import signal

    a, b = spawn_server(port=0), spawn_server(port=0)
    wa, wb = _remote(Worker, a, 0), _remote(Pid, b)
    assert wb.total([wa.slow(0.3, 1), wa.slow(0.0, 2)]) == 3  # futures inside a list travel too
    assert wb.pick({"x": wa.slow(0.2, 5)}) == 6  # and inside a dict
    read = wa.slow(0.0, 7)
    assert read.result(timeout=10) == 7
    other = _remote(Worker, a, 0)
    running = other.slow(60, 8)
    consumer_fut = wb.total.remote([running])
    os.kill(_remote(Pid, a).pid(), signal.SIGKILL)
    t0 = time.monotonic()
    assert read.result(timeout=10) == 7  # a value already read stays readable
    with pytest.raises(mesh.ServerUnavailable):
        running.result(timeout=60)
    with pytest.raises(mesh.MeshError):  # the consumer waiting on the dead producer fails too, never hangs
        consumer_fut.result(timeout=60)
    assert time.monotonic() - t0 < 60
    assert wb.total([1, 2]) == 3  # the consumer's server goes on


class Scoped(mesh.AgentBase):
    """An AgentScope-style agent: extra constructor keywords go to AgentBase."""

    def __init__(self, name, sys_prompt=None, **kwargs):
        super().__init__(name, sys_prompt=sys_prompt, model_config_name="m", use_memory=True, **kwargs)
        self.sys_prompt = sys_prompt

    def reply(self, x=None):
        if x is not None:
            self.observe(x)
        return mesh.Msg(self.name, f"{self.sys_prompt}:{len(self.memory)}")


@pytest.mark.parametrize("where", ["local", "remote"])
def test_agentbase_kwargs_observe_lists_none_and_placeholders(server, where):
    conf = {} if where == "local" else {"to_dist": {"host": server.host, "port": server.port}}
    a = Scoped("sc", sys_prompt="sp", **conf)
    b = Scoped("other", **conf)
    m1, m2 = mesh.Msg("u", "1"), mesh.Msg("u", "2")
    a.observe([m1, m2])  # a list is appended item by item, as in AgentScope
    a.observe(None)  # nothing to remember
    assert [m.content for m in a.memory] == ["1", "2"]
    out = a()
    if where == "remote":
        assert isinstance(out, mesh.Placeholder)
    assert out.content == "sp:2"
    b.observe(a(m1))  # a reply (a Placeholder when remote) observed by another agent
    assert [m.content for m in b.memory] == ["sp:3"]
    state = a.state_dict()
    assert [m["content"] if isinstance(m, dict) else m.content for m in state["memory"]] == ["1", "2", "1"]
