"""The edge with the features it builds on: a @stream_func reply streams over message/stream, and
an HTTP request's W3C traceparent is the parent of the mesh call it makes."""

from __future__ import annotations

import json
import threading

import pytest

import mesh
from conftest import created
from tests.conftest import wait_until

httpx = pytest.importorskip("httpx")
pytest.importorskip("a2a")


class Teller(mesh.AgentBase):
    """Tells a story in two chunks; the second waits until the test has read the first."""

    @mesh.stream_func
    def reply(self, x=None):
        yield mesh.Msg(self.name, "once upon ")
        gate = _GATES[x.content]
        assert gate.wait(20)
        yield mesh.Msg(self.name, "a time")


_GATES: dict[str, threading.Event] = {}


class Echo(mesh.AgentBase):
    def reply(self, x=None):
        return mesh.Msg(self.name, f"echo: {x.content}")


@pytest.fixture
def edge():
    srv = mesh.AgentServer(http_port=0, advertise=False, capacity=8).launch(in_subprocess=False)
    try:
        yield srv
    finally:
        srv.shutdown()


def _body(text, method):
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": {"message": {
        "role": "user", "parts": [{"kind": "text", "text": text}], "messageId": "m-" + text}}}


def test_a_stream_func_reply_streams_its_chunks_as_they_are_made(edge):
    created(Teller(name="teller", to_dist={"host": edge.host, "port": edge.port}))
    gate = _GATES["go"] = threading.Event()
    texts = []
    with httpx.stream("POST", edge.http_url + "/a2a/teller/", json=_body("go", "message/stream"), timeout=30) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data:"):
                continue
            result = json.loads(line[5:])["result"]
            if result.get("kind") == "artifact-update":
                texts.append(result["artifact"]["parts"][0]["text"])
                if len(texts) == 1:
                    assert not gate.is_set()  # the first chunk arrived while the generator still waited
                    gate.set()
    assert texts == ["once upon ", "a time"]


def test_message_send_of_a_stream_func_reply_is_the_whole_reply(edge):
    created(Teller(name="teller", to_dist={"host": edge.host, "port": edge.port}))
    _GATES["whole"] = threading.Event()
    _GATES["whole"].set()
    r = httpx.post(edge.http_url + "/a2a/teller/", json=_body("whole", "message/send"), timeout=30).json()
    text = json.dumps(r["result"])
    assert "once upon a time" in text or ("once upon " in text and "a time" in text), r


def test_an_http_requests_traceparent_is_the_parent_of_the_mesh_call(edge):
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    old = trace._TRACER_PROVIDER
    trace._TRACER_PROVIDER = provider  # set_tracer_provider refuses a second set in one process
    try:
        created(Echo(name="echo", to_dist={"host": edge.host, "port": edge.port}))
        trace_id = "0af7651916cd43dd8448eb211c80319c"
        tp = f"00-{trace_id}-b7ad6b7169203331-01"
        r = httpx.post(edge.http_url + "/a2a/echo/", json=_body("t", "message/send"), headers={"traceparent": tp}, timeout=30)
        assert r.status_code == 200
        wait_until(lambda: any(s.name.endswith("/reply") or s.name.endswith("/__call__")
                               for s in memory.get_finished_spans() if s.kind == trace.SpanKind.SERVER))
        ours = [s for s in memory.get_finished_spans() if s.name.startswith(("a2a echo", "Echo/"))]  # a2a-sdk traces too
        assert {(s.name.split("/")[0], s.kind) for s in ours} >= {
            ("a2a echo", trace.SpanKind.SERVER), ("Echo", trace.SpanKind.CLIENT), ("Echo", trace.SpanKind.SERVER)}
        assert all(format(s.context.trace_id, "032x") == trace_id for s in ours), [s.name for s in ours]
    finally:
        trace._TRACER_PROVIDER = old
        provider.shutdown()
