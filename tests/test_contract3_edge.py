"""Acceptance tests of API.md, third pass: the HTTP edge's token rule to the letter, A2A corners, tracing of
every call kind."""

from __future__ import annotations

import asyncio
import json

import pytest

import mesh
from conftest import created, wait_until
from test_contract_cli import Start

httpx = pytest.importorskip("httpx")

TOKEN = "c3-token-value"


class Counting(mesh.AgentBase):
    def __init__(self, name, **kwargs):
        super().__init__(name, **kwargs)
        self.seen = 0

    def reply(self, x):
        self.seen += 1
        return mesh.Msg(self.name, f"seen {self.seen}")


class AsyncTeller(mesh.AgentBase):
    @mesh.stream_func
    async def reply(self, x):
        for word in ("alpha", "beta", "gamma"):
            await asyncio.sleep(0.01)
            yield mesh.Msg(self.name, word)


class Plain(metaclass=mesh.RpcMeta):
    def __init__(self, name="plainobj"):
        self.name = name

    def reply(self, x):
        return x


def _rpc(method, text):
    return {
        "jsonrpc": "2.0", "id": 7, "method": method,
        "params": {"message": {"role": "user", "kind": "message", "messageId": "m3",
                               "parts": [{"kind": "text", "text": text}]}},
    }


def _http_url(line: str) -> str:
    url = line[line.index("http://"):].split()[0].rstrip(",)")
    return "http://127.0.0.1:" + url.rsplit(":", 1)[1]


@pytest.fixture
def edge():
    srv = mesh.AgentServer(port=0, advertise=False, http_port=0).launch(in_subprocess=False)
    try:
        yield srv
    finally:
        srv.shutdown()


def _url(srv):
    return getattr(srv, "http_url", None) or f"http://127.0.0.1:{srv.http_port}"


def test_token_protects_every_request_and_a_refused_one_runs_nothing(tmp_path):
    tok = tmp_path / "tok"
    tok.write_text(TOKEN + "\n")
    s = Start("--no-advertise", "--http", "0", "--http-host", "0.0.0.0", "--http-token-file", str(tok))
    try:
        base = _http_url(s.line)
        agent = Counting("guarded", to_dist={"host": s.host, "port": s.port})
        good = {"Authorization": f"Bearer {TOKEN}"}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            r = httpx.post(base + "/a2a/guarded/", json=_rpc("message/send", "x"), headers=headers, timeout=20)
            assert r.status_code == 401, headers
            s_r = httpx.post(base + "/a2a/guarded/", json=_rpc("message/stream", "x"), headers=headers, timeout=20)
            assert s_r.status_code == 401, headers
            assert httpx.get(base + "/metrics", headers=headers, timeout=20).status_code == 401
        assert agent.seen == 0  # none of the refused requests ran
        ok = httpx.post(base + "/a2a/guarded/", json=_rpc("message/send", "x"), headers=good, timeout=20)
        assert ok.status_code == 200 and "seen 1" in ok.text
        assert httpx.get(base + "/metrics", headers=good, timeout=20).status_code == 200
    finally:
        s.stop()


def test_only_agentbase_objects_are_a2a_agents(edge):
    created(Plain("plainobj", to_dist={"host": edge.host, "port": edge.port}))
    r = httpx.get(_url(edge) + "/a2a/plainobj/.well-known/agent-card.json", timeout=20)
    assert r.status_code == 404


def test_an_agent_created_after_start_is_served_and_keeps_its_state(edge):
    agent = Counting("late", to_dist={"host": edge.host, "port": edge.port})
    for n in (1, 2):
        r = httpx.post(_url(edge) + "/a2a/late/", json=_rpc("message/send", "hi"), timeout=20)
        assert r.status_code == 200 and f"seen {n}" in json.dumps(r.json()["result"])
        assert r.json()["id"] == 7
    assert agent.seen == 2  # the same actor the mesh proxy talks to
    assert agent(mesh.Msg("u", "x")).content == "seen 3"


def test_message_stream_of_an_async_generator_reply(edge):
    created(AsyncTeller("ateller", to_dist={"host": edge.host, "port": edge.port}))
    data = []
    with httpx.stream("POST", _url(edge) + "/a2a/ateller/", json=_rpc("message/stream", "go"), timeout=20) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data:"):
                data.append(json.loads(line[5:].strip()))
    joined = json.dumps(data)
    pos = [joined.find(w) for w in ("alpha", "beta", "gamma")]
    assert all(p >= 0 for p in pos) and pos == sorted(pos)
    assert all(d.get("jsonrpc") == "2.0" and d.get("id") == 7 for d in data)


def test_healthz_lists_the_named_agents(edge):
    created(Counting("h1", to_dist={"host": edge.host, "port": edge.port}))
    h = httpx.get(_url(edge) + "/healthz", timeout=20)
    assert h.status_code == 200 and h.headers["content-type"].startswith("application/json")
    assert "h1" in h.text


# ---------------------------------------------------------------- tracing


class Kinds(metaclass=mesh.RpcMeta):
    @mesh.async_func
    def later(self):
        return 1

    async def coro(self):
        return 2

    @mesh.stream_func
    def items(self):
        yield 3


def test_every_call_kind_makes_a_caller_span_and_a_child_server_span():
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace._TRACER_PROVIDER_SET_ONCE._done = False
    trace.set_tracer_provider(provider)
    srv = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=False)
    try:
        k = Kinds(to_dist={"host": srv.host, "port": srv.port})
        tracer = trace.get_tracer("contract3")
        for name, call in (("later", lambda: k.later().result(timeout=20)),
                           ("coro", lambda: k.coro().result(timeout=20)),
                           ("items", lambda: k.items().result(timeout=20)),
                           ("remote", lambda: k.later.remote().result(timeout=20))):
            exporter.clear()
            with tracer.start_as_current_span("user-" + name) as root:
                call()
            wait_until(lambda: len(exporter.get_finished_spans()) >= 3, timeout=10)
            spans = exporter.get_finished_spans()
            by_id = {s.context.span_id: s for s in spans}
            assert {s.context.trace_id for s in spans} == {root.get_span_context().trace_id}, name
            # the caller's span is a child of the user's, the server's a child of the caller's
            kids = [s for s in spans if s.parent is not None and s.parent.span_id == root.get_span_context().span_id]
            assert kids, name
            grandkids = [s for s in spans if s.parent is not None and s.parent.span_id in {c.context.span_id for c in kids}]
            assert grandkids, (name, [(s.name, s.kind.name) for s in spans])
            assert all(s.parent.span_id in by_id for s in spans if s.parent is not None), name
    finally:
        mesh.shutdown()
        srv.shutdown()
        trace._TRACER_PROVIDER = None
        trace._TRACER_PROVIDER_SET_ONCE._done = False
        provider.shutdown()


SERVER_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import mesh
srv = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=False)
print(srv.address, flush=True)
sys.stdin.readline()
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")), flush=True)
srv.shutdown()
"""


def test_a_server_without_opentelemetry_imports_none_even_when_its_callers_trace():
    import os
    import subprocess
    import sys

    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from conftest import read_line

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace._TRACER_PROVIDER_SET_ONCE._done = False
    trace.set_tracer_provider(provider)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    proc = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT.format(tests=os.path.dirname(__file__))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        address = read_line(proc.stdout).strip()
        host, port = address.removeprefix("tcp://").rsplit(":", 1)
        k = Kinds(to_dist={"host": host, "port": int(port)})
        with trace.get_tracer("contract3").start_as_current_span("user"):
            assert k.coro().result(timeout=20) == 2
            assert k.later().result(timeout=20) == 1
        assert exporter.get_finished_spans()  # the caller traced
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert read_line(proc.stdout).strip() == "[]"
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        mesh.shutdown()
        trace._TRACER_PROVIDER = None
        trace._TRACER_PROVIDER_SET_ONCE._done = False
        provider.shutdown()
