"""The HTTP edge: A2A agents (real a2a-sdk client, 0.3 and 1.0), /healthz, /metrics, streaming."""

from __future__ import annotations

import asyncio
import json
import threading

import httpx
import pytest

import mesh
from mesh.edge import _a2a
from tests.conftest import wait_until

pytest.importorskip("a2a")

from a2a.client import A2ACardResolver, ClientConfig, ClientFactory, create_client  # noqa: E402
from a2a.types import Message, Part, Role, SendMessageRequest  # noqa: E402


class Echo(mesh.AgentBase):
    """Echoes what it is told."""

    def reply(self, x=None):
        return mesh.Msg(self.name, f"echo: {x.content}", metadata={"seen": x.metadata})


class Boom(mesh.AgentBase):
    def reply(self, x=None):
        raise ValueError("boom")


@pytest.fixture
def edge():
    srv = mesh.AgentServer(http_port=0, advertise=False, capacity=8).launch(in_subprocess=False)
    try:
        yield srv
    finally:
        srv.shutdown()


def _place(srv, cls, name):
    return cls(name=name, to_dist={"host": srv.host, "port": srv.port})


def _send_body(text, method="message/send", mid="m1", **message):
    return {"jsonrpc": "2.0", "id": 7, "method": method, "params": {"message": {
        "role": "user", "parts": [{"kind": "text", "text": text}], "messageId": mid, **message}}}


def _user(text):
    return SendMessageRequest(message=Message(role=Role.ROLE_USER, message_id=text, parts=[Part(text=text)]))


def test_http_port_is_bound_and_reported(edge):
    assert isinstance(edge.http_port, int) and edge.http_port > 0
    assert edge.http_url == f"http://127.0.0.1:{edge.http_port}"


def test_card_both_protocol_versions(edge):
    _place(edge, Echo, "echo")
    r = httpx.get(edge.http_url + "/a2a/echo/.well-known/agent-card.json")
    assert r.status_code == 200
    card = r.json()
    assert card["name"] == "echo" and card["capabilities"]["streaming"] is True
    versions = {i["protocolVersion"] for i in card["supportedInterfaces"]}
    assert versions == {"1.0", "0.3"}
    assert card["url"] == edge.http_url + "/a2a/echo/" and card["protocolVersion"] == "0.3"  # 0.3 clients' fields
    assert httpx.get(edge.http_url + "/a2a/nobody/.well-known/agent-card.json").status_code == 404

    async def resolve():
        async with httpx.AsyncClient() as http:
            return await A2ACardResolver(http, edge.http_url + "/a2a/echo").get_agent_card()

    sdk_card = asyncio.run(resolve())
    assert sdk_card.name == "echo" and len(sdk_card.supported_interfaces) == 2


def test_message_send_raw_0_3(edge):
    _place(edge, Echo, "echo")
    r = httpx.post(edge.http_url + "/a2a/echo/", json=_send_body("hello"), timeout=20)
    result = r.json()["result"]
    assert result["kind"] == "task" and result["status"]["state"] == "completed"
    assert result["artifacts"][0]["parts"][0]["text"] == "echo: hello"
    assert result["status"]["message"]["parts"][0]["text"] == "echo: hello"
    # the task is the mesh call: its metadata names it
    assert result["metadata"]["mesh_server"] == edge.address and result["metadata"]["mesh_task"]


def test_a2a_ids_reach_the_agent_and_registered_name(edge):
    Echo(name="inner", to_dist={"host": edge.host, "port": edge.port, "name": "front", "detached": True})
    r = httpx.post(edge.http_url + "/a2a/front/", json=_send_body("x", contextId="ctx-1"), timeout=20)
    result = r.json()["result"]
    assert result["contextId"] == "ctx-1"
    calls = {(c["class"], c["method"]) for c in edge._servicer.status()["calls"]}
    assert ("Echo", "__call__") in calls


def test_sdk_client_send_and_stream(edge):
    _place(edge, Echo, "echo")

    async def run(streaming):
        client = await create_client(edge.http_url + "/a2a/echo/", client_config=ClientConfig(streaming=streaming))
        try:
            return [ev async for ev in client.send_message(_user(f"hi{int(streaming)}"))]
        finally:
            await client.close()

    events = asyncio.run(run(False))
    task = events[-1].task
    assert task.artifacts[0].parts[0].text == "echo: hi0"
    events = asyncio.run(run(True))
    kinds = [ev.WhichOneof("payload") for ev in events]
    assert "artifact_update" in kinds
    chunk = next(ev for ev in events if ev.HasField("artifact_update"))
    assert chunk.artifact_update.artifact.parts[0].text == "echo: hi1"


def test_sdk_client_speaking_0_3(edge):
    _place(edge, Echo, "echo")

    async def run():
        async with httpx.AsyncClient() as http:
            card = await A2ACardResolver(http, edge.http_url + "/a2a/echo").get_agent_card()
        legacy = [i for i in card.supported_interfaces if i.protocol_version == "0.3"]
        del card.supported_interfaces[:]
        card.supported_interfaces.extend(legacy)
        client = ClientFactory(ClientConfig(streaming=False)).create(card)
        try:
            return [ev async for ev in client.send_message(_user("old"))]
        finally:
            await client.close()

    events = asyncio.run(run())
    assert events[-1].task.artifacts[0].parts[0].text == "echo: old"


def test_failing_agent_gives_failed_task_and_error_metric(edge):
    _place(edge, Boom, "boom")
    result = httpx.post(edge.http_url + "/a2a/boom/", json=_send_body("x"), timeout=20).json()["result"]
    assert result["status"]["state"] == "failed"
    assert "boom" in result["status"]["message"]["parts"][0]["text"]
    text = httpx.get(edge.http_url + "/metrics").text
    assert 'mesh_call_errors_total{class="Boom",error="ValueError",method="__call__"} 1.0' in text


def test_healthz_and_metrics(edge):
    echo = _place(edge, Echo, "echo")
    for i in range(3):
        echo(mesh.Msg("u", str(i))).result(timeout=10)
    health = httpx.get(edge.http_url + "/healthz")
    assert health.status_code == 200
    body = health.json()
    assert body["ok"] is True and body["agents"][0]["name"] == "echo" and body["address"] == edge.address
    text = httpx.get(edge.http_url + "/metrics").text
    assert httpx.get(edge.http_url + "/metrics").headers["content-type"].startswith("text/plain")
    assert 'mesh_calls_total{class="Echo",method="__call__"} 3.0' in text
    assert 'mesh_call_duration_seconds_count{class="Echo",method="__call__"} 3.0' in text
    assert 'mesh_call_duration_seconds_bucket{class="Echo",le="+Inf",method="__call__"} 3.0' in text
    for name in ("mesh_queue_depth{", "mesh_calls_in_flight", "mesh_results_held", "mesh_bytes_received_total",
                 "mesh_bytes_sent_total", "mesh_queued_calls", "mesh_http_requests_total"):
        assert name in text, name
    received = float(next(line.split()[1] for line in text.splitlines() if line.startswith("mesh_bytes_received_total")))
    assert received > 0


def test_stream_sends_each_chunk_as_it_is_made(edge, monkeypatch):
    """The SSE stream carries a streaming reply's items one by one: the first arrives while the
    producer still holds back the second (the adapter's shape: an async iterable reply)."""
    _place(edge, Echo, "echo")
    release = threading.Event()

    class FakeStream:  # what a mesh.Stream looks like to the adapter: async iterable items
        def __init__(self):
            self.items = ["one", "two"]

        def __aiter__(self):
            return self._gen()

        async def _gen(self):
            yield mesh.Msg("echo", "one")
            while not release.is_set():
                await asyncio.sleep(0.01)
            yield mesh.Msg("echo", "two")

    monkeypatch.setattr(_a2a, "call_agent", lambda agent, msg, traceparent: FakeStream())
    texts = []
    with httpx.stream("POST", edge.http_url + "/a2a/echo/", json=_send_body("go", "message/stream"), timeout=20) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line.startswith("data:"):
                continue
            result = json.loads(line[5:])["result"]
            if result.get("kind") == "artifact-update":
                texts.append(result["artifact"]["parts"][0]["text"])
                if len(texts) == 1:
                    assert not release.is_set()  # chunk one came before chunk two was made
                    release.set()
    assert texts == ["one", "two"]


def test_traceparent_reaches_the_call_seam(edge, monkeypatch):
    _place(edge, Echo, "echo")
    seen = []
    real = _a2a.call_agent

    def spy(agent, msg, traceparent):
        seen.append(traceparent)
        return real(agent, msg, traceparent)

    monkeypatch.setattr(_a2a, "call_agent", spy)
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    httpx.post(edge.http_url + "/a2a/echo/", json=_send_body("t"), headers={"traceparent": tp}, timeout=20)
    assert seen == [tp]


def test_agent_listing_and_unknown_method(edge):
    _place(edge, Echo, "echo")
    listing = httpx.get(edge.http_url + "/a2a/").json()["agents"]
    assert [a["name"] for a in listing] == ["echo"]
    bad = httpx.post(edge.http_url + "/a2a/echo/", json={"jsonrpc": "2.0", "id": 1, "method": "nope"}).json()
    assert bad["error"]["code"] == -32601


def test_cli_start_http_ready_line(tmp_path):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "mesh.server", "start", "--http", "0", "--no-advertise"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "http=http://127.0.0.1:" in line
        url = line.split("http=")[1].rstrip(")\n")
        wait_until(lambda: httpx.get(url + "/healthz").status_code == 200, timeout=10)
    finally:
        proc.terminate()
        assert proc.wait(15) == 0
        proc.stdout.close()
