"""Tracing (issue 17, point 4): with OpenTelemetry's SDK configured, a client span per call in the
caller and a server span (its child) in the server that runs it, along chains across servers;
without it, nothing recorded and no ``opentelemetry`` module imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("opentelemetry.sdk.trace")

from hypothesis import given, settings, strategies as st  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

import mesh  # noqa: E402
from mesh import RpcMeta, async_func  # noqa: E402
from mesh._core import tracing, wire  # noqa: E402
from mesh.client._client import get_client  # noqa: E402

from conftest import TESTS, wait_until  # noqa: E402

SITE = os.path.join(TESTS, "otel_site")


class Hop(metaclass=RpcMeta):
    """One link of a chain: ``go`` calls the next link (sync), ``ago`` is a coroutine that awaits it."""

    def __init__(self, nxt=None) -> None:
        self.nxt = nxt

    def go(self, n: int) -> list:
        if n == 13:
            raise ValueError("unlucky")
        return [n] if self.nxt is None else [n, *self.nxt.go(n + 1)]

    async def ago(self, n: int) -> list:
        if self.nxt is None:
            return [n]
        return [n, *(await self.nxt.ago.remote(n + 1))]

    @async_func
    def later(self, n: int) -> int:
        if n < 0:
            raise KeyError(n)
        return n * 2


@pytest.fixture
def exporter():
    """The SDK configured in this process (in-memory export); the global provider undone afterwards."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace._TRACER_PROVIDER_SET_ONCE._done = False  # the SDK's own tests reset the global this way
    trace.set_tracer_provider(provider)
    assert tracing.enabled()
    try:
        yield memory
    finally:
        while _started:  # in-process servers keep the process's runtime (and its settings) alive
            _started.pop().shutdown()
        mesh.shutdown()  # the servers' last spans end before the provider goes
        trace._TRACER_PROVIDER = None
        trace._TRACER_PROVIDER_SET_ONCE._done = False
        provider.shutdown()
        assert not tracing.enabled()


_started: list[mesh.AgentServer] = []  # stopped by the exporter fixture: none outlives its test


def _servers(n: int) -> list[mesh.AgentServer]:
    servers = [mesh.AgentServer(port=0, capacity=4, advertise=False).launch(in_subprocess=False) for _ in range(n)]
    _started.extend(servers)
    return servers


def _chain(servers) -> Hop:
    """A -> B -> C...: one Hop per server, the first returned."""
    nxt = None
    for srv in reversed(servers):
        nxt = Hop(nxt, to_dist={"host": srv.host, "port": srv.port})
    return nxt


def _by_kind(spans, kind):
    return [s for s in spans if s.kind == kind]


def _assert_chain(spans, length: int, method: str) -> None:
    """``length`` client spans and ``length`` server spans of ``method``, one trace, each server span
    the child of a client span and each further client span the child of the server span before it."""
    mine = [s for s in spans if s.name == f"Hop/{method}"]
    clients, servers = _by_kind(mine, SpanKind.CLIENT), _by_kind(mine, SpanKind.SERVER)
    assert len(clients) == len(servers) == length, [(s.name, s.kind) for s in mine]
    assert len({s.context.trace_id for s in mine}) == 1
    by_id = {s.context.span_id: s for s in mine}
    roots = [c for c in clients if c.parent is None or c.parent.span_id not in by_id]
    assert len(roots) == 1
    span = roots[0]
    for depth in range(length):
        (server,) = [s for s in servers if s.parent.span_id == span.context.span_id]
        assert server.attributes["rpc.system"] == "zmq-agent-mesh"
        assert server.attributes["rpc.service"] == "Hop" and server.attributes["rpc.method"] == method
        if depth < length - 1:
            (span,) = [c for c in clients if c.parent is not None and c.parent.span_id == server.context.span_id]
            assert span.attributes["server.port"] > 0 and span.attributes["server.address"]


def test_a_chain_across_three_servers_is_one_trace(exporter):
    first = _chain(_servers(3))
    exporter.clear()
    assert first.go(1) == [1, 2, 3]
    wait_until(lambda: len([s for s in exporter.get_finished_spans() if s.name == "Hop/go"]) == 6)
    _assert_chain(exporter.get_finished_spans(), 3, "go")


def test_coroutine_methods_and_async_calls_chain_too(exporter):
    first = _chain(_servers(3))
    exporter.clear()
    assert first.ago.remote(1).result(timeout=20) == [1, 2, 3]
    wait_until(lambda: len([s for s in exporter.get_finished_spans() if s.name == "Hop/ago"]) == 6)
    _assert_chain(exporter.get_finished_spans(), 3, "ago")


def test_the_callers_current_span_is_the_parent_and_async_spans_end_at_the_reply(exporter):
    (srv,) = _servers(1)
    hop = Hop(to_dist={"host": srv.host, "port": srv.port})
    exporter.clear()
    with trace.get_tracer("app").start_as_current_span("job") as job:
        fut = hop.later(21)
        assert fut.result(timeout=10) == 42
    wait_until(lambda: len([s for s in exporter.get_finished_spans() if s.name == "Hop/later"]) == 2)
    spans = exporter.get_finished_spans()
    (client,) = [s for s in spans if s.name == "Hop/later" and s.kind == SpanKind.CLIENT]
    (server,) = [s for s in spans if s.name == "Hop/later" and s.kind == SpanKind.SERVER]
    assert client.parent.span_id == job.get_span_context().span_id
    assert server.parent.span_id == client.context.span_id
    assert client.start_time <= server.start_time and server.end_time <= client.end_time  # send -> reply


def test_errors_set_the_status_on_both_sides(exporter):
    (srv,) = _servers(1)
    hop = Hop(to_dist={"host": srv.host, "port": srv.port})
    exporter.clear()
    with pytest.raises(mesh.RemoteError):
        hop.go(13)
    with pytest.raises(mesh.RemoteError):
        hop.later(-1).result(timeout=10)
    wait_until(lambda: len([s for s in exporter.get_finished_spans() if s.name.startswith("Hop/")]) == 4)
    failed = [s for s in exporter.get_finished_spans() if s.name.startswith("Hop/")]
    assert {s.status.status_code for s in failed} == {StatusCode.ERROR}
    assert {(s.name, s.attributes["error.type"]) for s in failed} == {("Hop/go", "ValueError"), ("Hop/later", "KeyError")}
    (server_go,) = [s for s in failed if s.name == "Hop/go" and s.kind == SpanKind.SERVER]
    assert any(e.name == "exception" for e in server_go.events)  # the exception recorded where it was raised


def test_a_malformed_trace_context_is_ignored_and_the_call_runs(exporter, server):
    hop = Hop(to_dist={"host": server.host, "port": server.port})
    assert hop.go(0) == [0]  # created (to_dist() pipelines it) before calls on this thread's own socket name it
    exporter.clear()
    client = get_client()
    for bad in ("nonsense", 12345, "00-" + "0" * 32 + "-" + "0" * 16 + "-01", "x" * 10_000, ["00-1"]):
        header = {"op": wire.CALL, "obj": hop._mesh_id, "m": "go", "chain": "c-bad", "traceparent": bad, "tracestate": bad}
        assert client.call(server.address, header, [[5], {}], timeout=10) == [5]
    wait_until(lambda: len(exporter.get_finished_spans()) == 5)
    spans = exporter.get_finished_spans()
    assert all(s.kind == SpanKind.SERVER and s.parent is None for s in spans)  # each a new trace


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.none(), st.text(max_size=200), st.integers(), st.binary(max_size=80), st.lists(st.text(max_size=5))),
    st.one_of(st.none(), st.text(max_size=300), st.integers(), st.binary(max_size=40)),
)
def test_fuzz_trace_context_from_peers_never_raises(parent, state):
    header = {"traceparent": parent, "tracestate": state}
    ctx = tracing._extract(tracing.carrier(header))
    if ctx is not None:
        span = trace.get_current_span(ctx)
        assert span.get_span_context().trace_id >= 0
    tracing._extract({"TraceParent": parent, "tracestate": state})


def test_an_incoming_http_request_is_the_parent_of_its_mesh_calls(exporter, server):
    hop = Hop(to_dist={"host": server.host, "port": server.port})
    exporter.clear()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {"TraceParent": f"00-{trace_id}-00f067aa0ba902b7-01", "tracestate": "vendor=1"}
    with tracing.incoming(headers, "a2a message/send", {"mesh.agent": "hop"}) as edge:
        assert edge is not None
        assert hop.go(7) == [7]
    wait_until(lambda: len(exporter.get_finished_spans()) == 3)
    spans = {(s.name, s.kind): s for s in exporter.get_finished_spans()}
    edge_span = spans[("a2a message/send", SpanKind.SERVER)]
    assert format(edge_span.context.trace_id, "032x") == trace_id
    assert edge_span.parent.span_id == 0x00F067AA0BA902B7 and edge_span.parent.is_remote
    assert spans[("Hop/go", SpanKind.CLIENT)].parent.span_id == edge_span.context.span_id
    assert spans[("Hop/go", SpanKind.SERVER)].parent.span_id == spans[("Hop/go", SpanKind.CLIENT)].context.span_id
    with pytest.raises(RuntimeError), tracing.incoming({}, "failing"):
        raise RuntimeError("boom")
    (failing,) = [s for s in exporter.get_finished_spans() if s.name == "failing"]
    assert failing.status.status_code == StatusCode.ERROR and failing.parent is None


def test_without_a_provider_nothing_is_traced_even_with_the_api_imported(server):
    assert trace._TRACER_PROVIDER is None and not tracing.enabled()  # imported here, never configured
    with tracing.incoming({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, "x") as span:
        assert span is None
    hop = Hop(to_dist={"host": server.host, "port": server.port})
    header: dict = {"op": wire.CALL, "obj": hop._mesh_id, "m": "go", "chain": "c1"}
    assert hop.go(1) == [1] and get_client().call(server.address, header, [[2], {}], timeout=10) == [2]
    assert "traceparent" not in header


# ------------------------------------------------------------------------- other processes
_NO_OTEL = textwrap.dedent("""
    import sys
    import mesh
    from mesh import RpcMeta
    from mesh._core import tracing

    class Obj(metaclass=RpcMeta):
        def f(self, x):
            return x + 1
        async def g(self, x):
            return x + 2

    srv = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=False)
    o = Obj(to_dist={"host": srv.host, "port": srv.port})
    assert o.f(1) == 2 and o.g(1).result(10) == 3 and o.f.remote(5).result(10) == 6
    assert not tracing.enabled()
    srv.shutdown()
    mesh.shutdown()
    print(sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry"))
""")


def test_a_process_without_opentelemetry_configured_imports_none_of_it():
    out = subprocess.run([sys.executable, "-c", _NO_OTEL], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def _read_spans(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.endswith("\n")]


def test_a_chain_through_server_processes_is_one_trace(exporter, spawn_server, tmp_path, monkeypatch):
    spans_file = str(tmp_path / "spans.jsonl")
    monkeypatch.setenv("MESH_TEST_SPANS", spans_file)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([SITE, *sys.path]))
    b, c = spawn_server(), spawn_server()
    first = _chain([b, c])
    exporter.clear()
    with trace.get_tracer("app").start_as_current_span("app") as app:
        assert first.go(1) == [1, 2]
    wait_until(lambda: len(_read_spans(spans_file)) >= 3, timeout=20)
    remote = [s for s in _read_spans(spans_file) if s["name"] == "Hop/go"]
    here = [s for s in exporter.get_finished_spans() if s.name == "Hop/go"]
    trace_id = format(app.get_span_context().trace_id, "032x")
    assert {s["trace_id"] for s in remote} == {trace_id}
    (client_a,) = here
    (server_b,) = [s for s in remote if s["kind"] == "SERVER" and s["parent"] == format(client_a.context.span_id, "016x")]
    (client_b,) = [s for s in remote if s["kind"] == "CLIENT" and s["parent"] == server_b["span_id"]]
    (server_c,) = [s for s in remote if s["kind"] == "SERVER" and s["parent"] == client_b["span_id"]]
    assert server_b["pid"] == client_b["pid"] != server_c["pid"] != os.getpid()
    assert server_c["attributes"] == {"rpc.system": "zmq-agent-mesh", "rpc.service": "Hop", "rpc.method": "go"}
