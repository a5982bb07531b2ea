"""The edge's guard: bearer token, refusals at start, bounded bodies, slow and malformed clients,
and the core's lightness (no HTTP library imported by a server without --http)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import httpx
import pytest

import mesh
from tests.conftest import run_cli

pytest.importorskip("a2a")

HTTP_MODULES = ("uvicorn", "starlette", "a2a", "prometheus_client", "httpx", "sse_starlette")


class Counter(mesh.AgentBase):
    def __init__(self, name):
        super().__init__(name)
        self.n = 0

    def reply(self, x=None):
        self.n += 1
        return mesh.Msg(self.name, f"call {self.n}")

    def count(self) -> int:
        return self.n


def _body(text="x"):
    return {"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": {
        "role": "user", "parts": [{"kind": "text", "text": text}], "messageId": os.urandom(4).hex()}}}


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "token"
    path.write_text("s3cr3t-token-0123456789abcdef\n")
    path.chmod(0o600)
    return str(path)


def test_non_loopback_http_needs_a_token():
    with pytest.raises(ValueError, match="without a bearer token"):
        mesh.AgentServer(http_port=0, http_host="0.0.0.0", advertise=False)
    # the mesh secret does not stand in for the token
    with pytest.raises(ValueError, match="without a bearer token"):
        mesh.AgentServer(host="0.0.0.0", secret="x" * 32, http_port=0, http_host="0.0.0.0", advertise=False)


def test_cli_refuses_non_loopback_http_without_token():
    done = run_cli("start", "--http", "0", "--http-host", "0.0.0.0", "--no-advertise", timeout=30)
    assert done.returncode == 2
    assert "--http-token-file" in done.stderr and "bearer token" in done.stderr


def test_token_must_differ_from_secret(tmp_path):
    path = tmp_path / "t"
    path.write_text("same-secret-0123456789")
    with pytest.raises(ValueError, match="must not be the mesh secret"):
        mesh.AgentServer(secret="same-secret-0123456789", http_port=0, http_token_file=str(path), advertise=False)


def test_unreadable_or_empty_token_file(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        mesh.AgentServer(http_port=0, http_token_file=str(empty), advertise=False)
    with pytest.raises(ValueError, match="http-token-file"):
        mesh.AgentServer(http_port=0, http_token_file=str(tmp_path / "missing"), advertise=False)


def test_token_required_and_nothing_runs_without_it(token_file):
    srv = mesh.AgentServer(http_port=0, http_token_file=token_file, advertise=False).launch(in_subprocess=False)
    try:
        agent = Counter(name="c", to_dist={"host": srv.host, "port": srv.port})
        url = srv.http_url
        for path in ("/healthz", "/metrics", "/a2a/c/.well-known/agent-card.json", "/a2a/"):
            assert httpx.get(url + path).status_code == 401, path
        denied = httpx.post(url + "/a2a/c/", json=_body())
        assert denied.status_code == 401 and denied.headers["www-authenticate"].startswith("Bearer")
        wrong = httpx.post(url + "/a2a/c/", json=_body(), headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert agent.count() == 0  # the agent never ran
        good = {"Authorization": "Bearer s3cr3t-token-0123456789abcdef"}
        ok = httpx.post(url + "/a2a/c/", json=_body(), headers=good, timeout=20)
        assert ok.json()["result"]["artifacts"][0]["parts"][0]["text"] == "call 1"
        card = httpx.get(url + "/a2a/c/.well-known/agent-card.json", headers=good).json()
        assert "bearer" in card["securitySchemes"]
        assert mesh.a2a.remote_agent(url + "/a2a/c/", token="s3cr3t-token-0123456789abcdef")("y").content == "call 2"
        with pytest.raises(mesh.AuthenticationError):
            mesh.a2a.remote_agent(url + "/a2a/c/", token="wrong")("y")
    finally:
        srv.shutdown()


def test_token_on_any_address(token_file):
    srv = mesh.AgentServer(http_port=0, http_host="0.0.0.0", http_token_file=token_file, advertise=False)
    srv.launch(in_subprocess=False)
    try:
        assert httpx.get(srv.http_url + "/healthz").status_code == 401
    finally:
        srv.shutdown()


@pytest.fixture
def edge():
    srv = mesh.AgentServer(http_port=0, http_max_body=4096, advertise=False).launch(in_subprocess=False)
    try:
        yield srv
    finally:
        srv.shutdown()


def test_body_bounded(edge):
    agent = Counter(name="c", to_dist={"host": edge.host, "port": edge.port})
    big = httpx.post(edge.http_url + "/a2a/c/", json=_body("x" * 10_000))
    assert big.status_code == 413
    chunked = httpx.post(edge.http_url + "/a2a/c/", content=iter([b"{" + b" " * 3000, b" " * 3000 + b"}"]))
    assert chunked.status_code == 413
    assert agent.count() == 0
    assert httpx.post(edge.http_url + "/a2a/c/", json=_body(), timeout=20).status_code == 200


def test_malformed_requests_get_errors_and_change_nothing(edge):
    agent = Counter(name="c", to_dist={"host": edge.host, "port": edge.port})
    url = edge.http_url + "/a2a/c/"
    assert "error" in httpx.post(url, content=b"{not json").json()
    assert "error" in httpx.post(url, json=[1, 2]).json()
    assert "error" in httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "message/send",
                                            "params": {"message": 5}}).json()
    assert agent.count() == 0
    assert httpx.post(url, json=_body(), timeout=20).status_code == 200


def test_slow_clients_do_not_stall_the_mesh(edge):
    agent = Counter(name="c", to_dist={"host": edge.host, "port": edge.port})
    slow = []
    try:
        for _ in range(20):  # connections that send half a request and stop
            s = socket.create_connection(("127.0.0.1", edge.http_port))
            s.sendall(b"POST /a2a/c/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"jsonrpc\"")
            slow.append(s)
        assert agent.count() == 0  # the mesh answers at once
        assert agent(mesh.Msg("u", "z")).content == "call 1"
        r = httpx.post(edge.http_url + "/a2a/c/", json=_body(), timeout=20)  # and HTTP too
        assert r.json()["result"]["artifacts"][0]["parts"][0]["text"] == "call 2"
    finally:
        for s in slow:
            s.close()


def test_a_server_without_http_imports_no_http_library(tmp_path):
    code = (
        "import sys, mesh\n"
        "srv = mesh.AgentServer(advertise=False).launch(in_subprocess=False)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HTTP_MODULES!r}))\n"
        "srv.shutdown()\n"
    )
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    assert not imported & set(HTTP_MODULES)


def test_http_port_in_use_refuses_to_start():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        port = holder.getsockname()[1]
        srv = mesh.AgentServer(http_port=port, advertise=False)
        with pytest.raises(ValueError, match="cannot serve HTTP"):
            srv.launch(in_subprocess=False)
        # the mesh port was released too: a new server starts
        mesh.AgentServer(advertise=False).launch(in_subprocess=False).shutdown()
    finally:
        holder.close()
