"""Acceptance tests (second pass) of API.md "The edge": A2A over HTTP, /healthz, /metrics."""

from __future__ import annotations

import asyncio
import json

import pytest

import mesh

httpx = pytest.importorskip("httpx")
pytest.importorskip("a2a")


class Asyncy(mesh.AgentBase):
    async def reply(self, x):
        await asyncio.sleep(0)
        return mesh.Msg(self.name, f"async says {x.content}")


class Failing(mesh.AgentBase):
    def reply(self, x):
        raise ValueError("agent failed on purpose")


class Plain(mesh.AgentBase):
    def reply(self, x):
        return mesh.Msg(self.name, f"plain {x.content}")


def _rpc(method, text, rid=1):
    return {
        "jsonrpc": "2.0", "id": rid, "method": method,
        "params": {"message": {"role": "user", "kind": "message", "messageId": f"m{rid}",
                               "parts": [{"kind": "text", "text": text}]}},
    }


@pytest.fixture
def edge():
    srv = mesh.AgentServer(port=0, advertise=False, http_port=0).launch(in_subprocess=False)
    try:
        where = {"host": srv.host, "port": srv.port}
        agents = [Asyncy("asyncy", to_dist=where), Failing("failing", to_dist=where), Plain("plain", to_dist=where)]
        assert [a.name for a in agents] == ["asyncy", "failing", "plain"]  # created (to_dist() returns before)
        yield srv
    finally:
        srv.shutdown()


def _url(srv):
    return getattr(srv, "http_url", None) or f"http://127.0.0.1:{srv.http_port}"


def test_async_reply_agent_is_served(edge):
    r = httpx.post(_url(edge) + "/a2a/asyncy/", json=_rpc("message/send", "hi"), timeout=20)
    assert r.status_code == 200
    assert "async says hi" in json.dumps(r.json()["result"])


def test_message_stream_of_a_plain_reply_gives_its_text(edge):
    data = []
    with httpx.stream("POST", _url(edge) + "/a2a/plain/", json=_rpc("message/stream", "s"), timeout=20) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        data = [line for line in r.iter_lines() if line.startswith("data:")]
    assert data and "plain s" in "\n".join(data)


def test_unknown_agent_is_404_and_the_server_keeps_serving(edge):
    base = _url(edge)
    assert httpx.get(base + "/a2a/nobody/.well-known/agent-card.json", timeout=20).status_code == 404
    r = httpx.post(base + "/a2a/nobody/", json=_rpc("message/send", "x"), timeout=20)
    assert r.status_code == 404 or "error" in r.json()
    assert httpx.get(base + "/healthz", timeout=20).status_code == 200


def test_json_rpc_errors_are_json_rpc_errors(edge):
    base = _url(edge) + "/a2a/plain/"
    r = httpx.post(base, content=b"{not json", headers={"content-type": "application/json"}, timeout=20)
    assert r.status_code in (200, 400)
    assert r.json()["error"]["code"] == -32700
    r = httpx.post(base, json={"jsonrpc": "2.0", "id": 7, "method": "no/such", "params": {}}, timeout=20)
    assert r.json()["error"]["code"] == -32601 and r.json()["id"] == 7
    r = httpx.post(_url(edge) + "/a2a/failing/", json=_rpc("message/send", "x"), timeout=20)
    body = json.dumps(r.json())
    assert "error" in body or "failed" in body.lower()
    ok = httpx.post(base, json=_rpc("message/send", "after"), timeout=20)
    assert "plain after" in json.dumps(ok.json()["result"])


def test_healthz_is_the_servers_status_and_metrics_count_errors(edge):
    base = _url(edge)
    h = httpx.get(base + "/healthz", timeout=20)
    assert h.status_code == 200 and h.headers["content-type"].startswith("application/json")
    status = h.json()
    text = json.dumps(status)
    assert "asyncy" in text or "agents" in text  # the server's status: its agents
    httpx.post(base + "/a2a/failing/", json=_rpc("message/send", "x"), timeout=20)
    m = httpx.get(base + "/metrics", timeout=20).text
    err_lines = [ln for ln in m.splitlines() if "error" in ln.lower() and not ln.startswith("#")]
    assert any(float(ln.rsplit(" ", 1)[1]) >= 1 for ln in err_lines), m


def test_card_names_the_protocol_versions_it_serves(edge):
    card = httpx.get(_url(edge) + "/a2a/plain/.well-known/agent-card.json", timeout=20).json()
    assert card["name"] == "plain"
    text = json.dumps(card)
    assert "0.3" in text
    assert "/a2a/plain" in card.get("url", "") or "/a2a/plain" in text
