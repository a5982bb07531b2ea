"""Acceptance tests of API.md: the HTTP / A2A edge, metrics, and tracing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

import mesh
from conftest import created

httpx = pytest.importorskip("httpx")
pytest.importorskip("a2a")


class Parrot(mesh.AgentBase):
    def reply(self, x):
        return mesh.Msg(self.name, f"parrot: {x.content}")


class Teller(mesh.AgentBase):
    @mesh.stream_func
    def reply(self, x):
        for word in ("once", "upon", "a time"):
            yield mesh.Msg(self.name, word)


def _rpc(method, text, **params):
    return {
        "jsonrpc": "2.0", "id": 1, "method": method,
        "params": {"message": {"role": "user", "kind": "message", "messageId": "m1",
                               "parts": [{"kind": "text", "text": text}]}, **params},
    }


@pytest.fixture
def edge():
    srv = mesh.AgentServer(port=0, advertise=False, http_port=0).launch(in_subprocess=False)
    try:
        created(Parrot("polly", to_dist={"host": srv.host, "port": srv.port}))
        created(Teller("teller", to_dist={"host": srv.host, "port": srv.port}))
        yield srv
    finally:
        srv.shutdown()


def _url(srv):
    return getattr(srv, "http_url", None) or f"http://127.0.0.1:{srv.http_port}"


def test_agent_card(edge):
    r = httpx.get(_url(edge) + "/a2a/polly/.well-known/agent-card.json", timeout=20)
    assert r.status_code == 200
    card = r.json()
    assert card["name"] == "polly"
    assert "/a2a/polly" in json.dumps(card)
    assert card.get("protocolVersion") == "0.3.0" or "0.3" in json.dumps(card)  # A2A 0.3 names are served


def test_message_send_gives_reply_text(edge):
    r = httpx.post(_url(edge) + "/a2a/polly/", json=_rpc("message/send", "hello"), timeout=20)
    assert r.status_code == 200
    assert "parrot: hello" in json.dumps(r.json()["result"])


def test_message_stream_gives_items_as_sse(edge):
    texts = []
    with httpx.stream("POST", _url(edge) + "/a2a/teller/", json=_rpc("message/stream", "go"), timeout=20) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data:"):
                texts.append(line[5:].strip())
    joined = "\n".join(texts)
    positions = [joined.find(w) for w in ("once", "upon", "a time")]
    assert all(p >= 0 for p in positions) and positions == sorted(positions)


def test_a2a_sdk_client_fetches_card_sends_and_streams(edge):
    from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
    from a2a.types import Message, Part, Role, SendMessageRequest

    async def main():
        async with httpx.AsyncClient(timeout=20) as http:
            card = await A2ACardResolver(http, _url(edge) + "/a2a/polly").get_agent_card()
            assert card.name == "polly"
            out = []
            for streaming in (False, True):
                client = ClientFactory(ClientConfig(streaming=streaming, httpx_client=http)).create(card)
                req = SendMessageRequest(message=Message(role=Role.ROLE_USER, message_id="x1",
                                                         parts=[Part(text="hi sdk")]))
                async for event in client.send_message(req):
                    out.append(str(event))
            return "\n".join(out)

    assert "parrot: hi sdk" in asyncio.run(main())


def test_healthz_and_metrics(edge):
    Parrot("p2", to_dist={"host": edge.host, "port": edge.port})(mesh.Msg("u", "x")).result(timeout=10)
    h = httpx.get(_url(edge) + "/healthz", timeout=20)
    assert h.status_code == 200
    assert isinstance(h.json(), dict)
    m = httpx.get(_url(edge) + "/metrics", timeout=20)
    assert m.status_code == 200
    assert m.headers["content-type"].startswith("text/plain")
    text = m.text
    assert "# TYPE" in text and "_bucket{" in text  # a latency histogram
    low = text.lower()
    assert "call" in low and "error" in low and "queue" in low


def test_cli_http_flag(tmp_path):
    from test_contract_cli import Start

    s = Start("--no-advertise", "--http", "0")
    try:
        assert "http://" in s.line
        url = s.line[s.line.index("http://"):].split()[0].rstrip(",)")
        assert httpx.get(url + "/healthz", timeout=20).status_code == 200
    finally:
        s.stop()


def test_http_on_non_loopback_needs_token(tmp_path, monkeypatch):
    from test_contract_cli import BIN

    monkeypatch.delenv("MESH_SECRET", raising=False)
    proc = subprocess.run([BIN, "start", "--no-advertise", "--http", "0", "--http-host", "0.0.0.0"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "token" in (proc.stderr + proc.stdout).lower()
    assert "Traceback" not in proc.stderr


def test_http_token_gives_401_and_runs_nothing(tmp_path):
    from test_contract_cli import Start

    token = tmp_path / "tok"
    token.write_text("s3cr3t-token\n")
    s = Start("--no-advertise", "--http", "0", "--http-host", "0.0.0.0", "--http-token-file", str(token))
    try:
        url = s.line[s.line.index("http://"):].split()[0].rstrip(",)")
        port = url.rsplit(":", 1)[1]
        base = f"http://127.0.0.1:{port}"
        created(Parrot("locked", to_dist={"host": s.host, "port": s.port}))
        r = httpx.post(base + "/a2a/locked/", json=_rpc("message/send", "x"), timeout=20)
        assert r.status_code == 401
        assert httpx.get(base + "/a2a/locked/.well-known/agent-card.json", timeout=20).status_code in (200, 401)
        ok = httpx.post(base + "/a2a/locked/", json=_rpc("message/send", "x"), timeout=20,
                        headers={"Authorization": "Bearer s3cr3t-token"})
        assert ok.status_code == 200 and "parrot: x" in ok.text
    finally:
        s.stop()


# ---------------------------------------------------------------- tracing

class Hop(metaclass=mesh.RpcMeta):
    def ping(self, other=None):
        return other.ping() + 1 if other is not None else 1


def test_spans_in_caller_and_server_along_a_chain():
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace._TRACER_PROVIDER_SET_ONCE._done = False  # other tests may have configured it (the SDK's own reset)
    trace.set_tracer_provider(provider)
    a_srv = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=False)
    b_srv = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=False)
    try:
        a = Hop(to_dist={"host": a_srv.host, "port": a_srv.port})
        b = Hop(to_dist={"host": b_srv.host, "port": b_srv.port})
        exporter.clear()
        assert a.ping(b) == 2
        from conftest import wait_until

        wait_until(lambda: len(exporter.get_finished_spans()) >= 4, timeout=10)
        spans = exporter.get_finished_spans()
        by_id = {s.context.span_id: s for s in spans}
        trace_ids = {s.context.trace_id for s in spans}
        assert len(trace_ids) == 1
        roots = [s for s in spans if s.parent is None]
        assert len(roots) == 1
        # a chain: every other span is a descendant of the root, depth >= 3 (client, server, client, server)
        depth = 0
        for s in spans:
            d, cur = 0, s
            while cur.parent is not None:
                cur = by_id[cur.parent.span_id]
                d += 1
            depth = max(depth, d)
        assert depth >= 3
        kinds = {s.kind.name for s in spans}
        assert {"CLIENT", "SERVER"} <= kinds or len(spans) >= 4
    finally:
        mesh.shutdown()
        a_srv.shutdown()
        b_srv.shutdown()
        trace._TRACER_PROVIDER = None  # undo the global: later tests run without OpenTelemetry
        trace._TRACER_PROVIDER_SET_ONCE._done = False
        provider.shutdown()


def test_no_opentelemetry_import_without_configuration():
    code = (
        "import sys, mesh\n"
        "class H(metaclass=mesh.RpcMeta):\n"
        "    def f(self):\n        return 1\n"
        "s = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=False)\n"
        "h = H(to_dist={'host': s.host, 'port': s.port})\n"
        "assert h.f() == 1\n"
        "mesh.shutdown(); s.shutdown()\n"
        "bad = [m for m in sys.modules if m.startswith('opentelemetry')]\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
