"""Acceptance tests of API.md, fourth pass: the HTTP/A2A edge, metrics and tracing as a user checks them
(encoded agent names, the card's fields, Prometheus parsing and exact counts, the a2a-sdk client with a
token, bad JSON-RPC input, error spans, a three-call trace)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

import mesh
from conftest import created, wait_until

httpx = pytest.importorskip("httpx")

TOKEN = "c4-edge-token"


class Teller(mesh.AgentBase):
    def reply(self, x):
        return mesh.Msg(self.name, f"told {x.content}")


class Slow(metaclass=mesh.RpcMeta):
    def hold(self, seconds):
        time.sleep(seconds)
        return seconds

    def ok(self):
        return 1

    def bad(self):
        raise KeyError("nope")


def _rpc(method, text, rid=1):
    return {"jsonrpc": "2.0", "id": rid, "method": method,
            "params": {"message": {"role": "user", "kind": "message", "messageId": f"m{rid}",
                                   "parts": [{"kind": "text", "text": text}]}}}


def _where(srv):
    return {"host": srv.host, "port": srv.port}


@pytest.fixture
def edge():
    srv = mesh.AgentServer(port=0, advertise=False, http_port=0).launch(in_subprocess=False)
    try:
        yield srv
    finally:
        srv.shutdown()


def _url(srv):
    return getattr(srv, "http_url", None) or f"http://127.0.0.1:{srv.http_port}"


@pytest.mark.parametrize("name, path", [("my agent", "my%20agent"), ("ünï", "%C3%BCn%C3%AF")])
def test_agent_names_that_need_encoding_are_served(edge, name, path):
    Teller(name, to_dist=_where(edge))
    card = httpx.get(f"{_url(edge)}/a2a/{path}/.well-known/agent-card.json", timeout=20)
    assert card.status_code == 200 and card.json()["name"] == name
    assert card.json()["url"].endswith(f"/a2a/{path}/")
    r = httpx.post(f"{_url(edge)}/a2a/{path}/", json=_rpc("message/send", "hi"), timeout=20)
    assert r.status_code == 200 and "told hi" in r.text


def test_the_card_has_what_an_a2a_client_needs(edge):
    created(Teller("carded", to_dist=_where(edge)))
    r = httpx.get(_url(edge) + "/a2a/carded/.well-known/agent-card.json", timeout=20)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    card = r.json()
    assert card["name"] == "carded"
    assert card["url"].startswith(_url(edge)) and card["url"].rstrip("/").endswith("/a2a/carded")
    assert str(card["protocolVersion"]).startswith("0.3")
    assert card["capabilities"]["streaming"] is True
    assert isinstance(card.get("skills"), list) and card["skills"]
    assert "text/plain" in card["defaultInputModes"] and card["version"]


def _families(srv):
    from prometheus_client.parser import text_string_to_metric_families

    r = httpx.get(_url(srv) + "/metrics", timeout=20)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def _value(fams, family, sample, **labels):
    f = fams.get(family)
    if f is None:
        return 0.0
    return sum(s.value for s in f.samples if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_parse_as_prometheus_and_count_each_mesh_call(edge):
    pytest.importorskip("prometheus_client")
    s = Slow(to_dist=_where(edge))
    for _ in range(7):
        assert s.ok() == 1
    for _ in range(2):
        with pytest.raises(KeyError):
            s.bad()
    fams = _families(edge)
    calls = _value(fams, "mesh_calls", "mesh_calls_total", **{"class": "Slow", "method": "ok"})
    assert calls == 7
    errors = [smp for smp in fams["mesh_call_errors"].samples
              if smp.labels.get("class") == "Slow" and smp.labels.get("method") == "bad"]
    assert sum(e.value for e in errors) == 2 and any("KeyError" in json.dumps(e.labels) for e in errors)
    hist = fams["mesh_call_duration_seconds"]
    assert hist.type == "histogram"
    buckets = [(smp.labels["le"], smp.value) for smp in hist.samples if smp.name.endswith("_bucket")
               and smp.labels.get("class") == "Slow" and smp.labels.get("method") == "ok"]
    values = [v for _, v in sorted(buckets, key=lambda b: float(b[0]))]
    assert values == sorted(values) and values[-1] == 7  # cumulative, +Inf holds every call
    count = _value(fams, "mesh_call_duration_seconds", "mesh_call_duration_seconds_count",
                   **{"class": "Slow", "method": "ok"})
    assert count == 7


def test_metrics_show_a_queue_while_calls_wait(edge):
    pytest.importorskip("prometheus_client")
    s = Slow(to_dist=_where(edge))
    futs = [s.hold.remote(0.4) for _ in range(3)]

    def queued():
        fams = _families(edge)
        return _value(fams, "mesh_queue_depth", "mesh_queue_depth", **{"class": "Slow"}) >= 1
    wait_until(queued, timeout=10)
    assert [f.result(timeout=20) for f in futs] == [0.4] * 3
    wait_until(lambda: _value(_families(edge), "mesh_queue_depth", "mesh_queue_depth", **{"class": "Slow"}) == 0,
               timeout=10)


def test_the_a2a_sdk_client_works_with_the_bearer_token_and_nothing_works_without(tmp_path):
    pytest.importorskip("a2a.client")
    from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
    from a2a.types import Message, Part, Role, SendMessageRequest

    tok = tmp_path / "token"
    tok.write_text(TOKEN + "\n")
    srv = mesh.AgentServer(port=0, advertise=False, http_port=0, http_token_file=str(tok)).launch(in_subprocess=False)
    try:
        created(Teller("guarded", to_dist=_where(srv)))
        base = _url(srv)
        for path in ("/healthz", "/a2a/guarded/.well-known/agent-card.json"):
            assert httpx.get(base + path, timeout=20).status_code == 401, path
        assert httpx.post(base + "/a2a/guarded/", json=_rpc("message/send", "x"), timeout=20).status_code == 401

        async def main():
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with httpx.AsyncClient(timeout=20, headers=headers) as http:
                card = await A2ACardResolver(http, base + "/a2a/guarded").get_agent_card()
                client = ClientFactory(ClientConfig(streaming=False, httpx_client=http)).create(card)
                req = SendMessageRequest(message=Message(role=Role.ROLE_USER, message_id="t1",
                                                         parts=[Part(text="with token")]))
                return card.name, [str(e) async for e in client.send_message(req)]

        name, events = asyncio.run(asyncio.wait_for(main(), 30))
        assert name == "guarded" and "told with token" in "\n".join(events)
    finally:
        srv.shutdown()


def test_bad_json_rpc_input_is_an_error_answer_and_the_agent_serves_on(edge):
    agent = Teller("robust", to_dist=_where(edge))
    base = _url(edge) + "/a2a/robust/"
    r = httpx.post(base, json={"jsonrpc": "2.0", "id": 9, "method": "message/send", "params": {}}, timeout=20)
    assert r.status_code < 500 and r.json()["error"]["code"] in (-32600, -32602) and r.json()["id"] == 9
    r = httpx.post(base, content=b"[]", headers={"content-type": "application/json"}, timeout=20)
    assert r.status_code < 500 and "error" in r.json()
    assert httpx.get(base, timeout=20).status_code in (404, 405)
    assert httpx.get(_url(edge) + "/no/such/path", timeout=20).status_code == 404
    r = httpx.post(base, json=_rpc("message/send", "still here", rid="s1"), timeout=20)
    assert r.status_code == 200 and r.json()["id"] == "s1" and "told still here" in r.text
    assert agent(mesh.Msg("u", "mesh")).content == "told mesh"


def test_the_later_protocol_version_the_card_names_is_served_too(edge):
    created(Teller("both", to_dist=_where(edge)))
    base = _url(edge) + "/a2a/both/"
    card = httpx.get(base + ".well-known/agent-card.json", timeout=20).json()
    versions = {str(i.get("protocolVersion")) for i in card.get("supportedInterfaces", [])}
    later = sorted(v for v in versions if not v.startswith("0.3"))
    if not later:
        pytest.skip("the card names no protocol version after 0.3")
    headers = {"A2A-Version": later[-1]}
    msg = {"role": "ROLE_USER", "messageId": "v1", "parts": [{"text": "new"}]}
    r = httpx.post(base, json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": msg}},
                   headers=headers, timeout=20)
    assert r.status_code == 200 and "told new" in r.text and "error" not in r.json()
    body = {"jsonrpc": "2.0", "id": 2, "method": "SendStreamingMessage", "params": {"message": msg}}
    with httpx.stream("POST", base, json=body, headers=headers, timeout=20) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_lines())
    assert "told new" in text
    r = httpx.post(base, json=_rpc("message/send", "old"), timeout=20)  # and the 0.3 names still
    assert r.status_code == 200 and "told old" in r.text


# ---------------------------------------------------------------- tracing


class Chain(metaclass=mesh.RpcMeta):
    def top(self, mid, leaf):
        return mid.middle(leaf)

    def middle(self, leaf):
        return leaf.bottom()

    def bottom(self):
        return "bottom"

    def boom(self):
        raise ValueError("traced failure")


@pytest.fixture
def spans():
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
    try:
        yield exporter
    finally:
        mesh.shutdown()
        trace._TRACER_PROVIDER = None
        trace._TRACER_PROVIDER_SET_ONCE._done = False
        provider.shutdown()


def test_a_failing_call_marks_its_caller_and_server_spans_as_errors(spans):
    from opentelemetry.trace import SpanKind, StatusCode

    srv = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=False)
    try:
        c = Chain(to_dist=_where(srv))
        spans.clear()
        with pytest.raises(ValueError):
            c.boom()
        wait_until(lambda: {s.kind for s in spans.get_finished_spans()} >= {SpanKind.CLIENT, SpanKind.SERVER},
                   timeout=10)
        mine = [s for s in spans.get_finished_spans() if "boom" in s.name]
        assert {s.kind for s in mine} >= {SpanKind.CLIENT, SpanKind.SERVER}
        assert all(s.status.status_code == StatusCode.ERROR for s in mine)
    finally:
        srv.shutdown()


def test_a_chain_of_three_calls_over_two_servers_is_one_trace_of_nested_spans(spans):
    from opentelemetry.trace import SpanKind

    a = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=False)
    b = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=False)
    try:
        top, mid, leaf = Chain(to_dist=_where(a)), Chain(to_dist=_where(b)), Chain(to_dist=_where(a))
        spans.clear()
        assert top.top(mid, leaf) == "bottom"
        wait_until(lambda: len([s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]) >= 3, timeout=10)
        got = spans.get_finished_spans()
        assert len({s.context.trace_id for s in got}) == 1
        by_id = {s.context.span_id: s for s in got}
        servers = {s.name: s for s in got if s.kind == SpanKind.SERVER}
        names = {n.split("/")[-1].split(".")[-1]: s for n, s in servers.items()}
        assert {"top", "middle", "bottom"} <= set(names)

        def ancestors(span):
            out = []
            while span.parent is not None and span.parent.span_id in by_id:
                span = by_id[span.parent.span_id]
                out.append(span)
            return out

        assert names["top"] in ancestors(names["middle"])
        assert names["middle"] in ancestors(names["bottom"])
        roots = [s for s in got if s.parent is None]
        assert len(roots) == 1 and roots[0].kind == SpanKind.CLIENT  # the caller's span starts the trace
    finally:
        b.shutdown()
        a.shutdown()
