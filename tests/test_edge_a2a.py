"""A2A in both directions: mesh.a2a.remote_agent against a second mesh server's HTTP edge, called
from this process and from a mesh agent on another server; and ``zmq-agent-server top``."""

from __future__ import annotations

import asyncio
import json
import pickle
import subprocess
import sys

import pytest

import mesh
from conftest import created
from tests.agents_lib import Echo

pytest.importorskip("a2a")


class Relay(mesh.AgentBase):
    """Forwards what it gets to an A2A agent and answers with what came back."""

    def __init__(self, name, target):
        super().__init__(name)
        self.target = target

    def reply(self, x=None):
        answer = self.target(x)
        return mesh.Msg(self.name, f"relayed: {answer.content}", metadata=answer.metadata)


class Conversation(mesh.AgentBase):
    """Answers with the A2A context id it was given (one conversation per context)."""

    def reply(self, x=None):
        return mesh.Msg(self.name, x.metadata["a2a"]["context_id"])


def test_remote_agent_against_a_second_servers_edge(spawn_server):
    other = spawn_server(http_port=0, custom_agent_classes=[Echo])
    assert other.http_port  # reported by the subprocess's ready line
    created(Echo(name="echo", to_dist={"host": other.host, "port": other.port}))
    remote = mesh.a2a.remote_agent(other.http_url + "/a2a/echo/")
    answer = remote(mesh.Msg("me", "hello"))
    assert isinstance(answer, mesh.Msg)
    assert answer.content == "hello" and answer.name == "echo" and remote.name == "echo"
    assert answer.metadata["a2a"]["state"] == "TASK_STATE_COMPLETED"
    assert remote.reply("plain text").content == "plain text"
    assert remote({"k": [1, 2]}).content == json.dumps({"k": [1, 2]})  # data parts go and come back
    assert asyncio.run(remote.areply("from asyncio")).content == "from asyncio"
    by_card = mesh.a2a.remote_agent(other.http_url + "/a2a/echo/.well-known/agent-card.json")
    assert by_card("card url").content == "card url"


def test_a_mesh_agent_calls_an_a2a_agent(spawn_server, server):
    other = spawn_server(http_port=0, custom_agent_classes=[Echo])
    created(Echo(name="echo", to_dist={"host": other.host, "port": other.port}))
    target = mesh.a2a.remote_agent(other.http_url + "/a2a/echo/")
    relay = Relay(name="relay", target=target, to_dist={"host": server.host, "port": server.port})
    answer = relay(mesh.Msg("me", "ping"))
    assert answer.content == "relayed: ping"
    assert answer.metadata["a2a"]["task_id"]


def test_one_proxy_is_one_conversation(server):
    srv = mesh.AgentServer(http_port=0, advertise=False).launch(in_subprocess=False)
    try:
        created(Conversation(name="conv", to_dist={"host": srv.host, "port": srv.port}))
        remote = mesh.a2a.remote_agent(srv.http_url + "/a2a/conv/")
        first = remote("a").content
        assert first and remote("b").content == first
        assert mesh.a2a.remote_agent(srv.http_url + "/a2a/conv/")("c").content != first
    finally:
        srv.shutdown()


def test_remote_agent_errors_and_pickling():
    with pytest.raises(mesh.ServerUnavailable):
        mesh.a2a.remote_agent("http://127.0.0.1:9/a2a/none/", timeout=5)("x")
    copy = pickle.loads(pickle.dumps(mesh.a2a.remote_agent("http://127.0.0.1:9/a2a/x/", token="t", name="x")))
    assert (copy.url, copy.token, copy.name) == ("http://127.0.0.1:9/a2a/x/", "t", "x")


def test_top_json_iterations(spawn_server):
    one = spawn_server(custom_agent_classes=[Echo])
    two = spawn_server(custom_agent_classes=[Echo])
    echo = Echo(name="e", to_dist={"host": one.host, "port": one.port})
    for i in range(5):
        echo(mesh.Msg("u", i)).result(timeout=10)
    done = subprocess.run(
        [sys.executable, "-m", "mesh.server", "top", one.address, two.address, "tcp://127.0.0.1:9", "--json",
         "--iterations", "2", "--interval", "0.2", "--timeout", "1"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    pages = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(pages) == 2
    servers = pages[-1]["servers"]
    assert [s["ok"] for s in servers] == [True, True, False]
    first = servers[0]
    assert first["agents"] == 1 and first["calls"] == 5 and first["errors"] == 0
    method = first["methods"][0]
    assert (method["class"], method["method"], method["calls"]) == ("Echo", "__call__", 5)
    assert method["p99_total"] is not None and "calls_per_s" in method
    assert servers[2]["error"]
    text = subprocess.run(
        [sys.executable, "-m", "mesh.server", "top", one.address, "--once", "--interval", "0.1"],
        capture_output=True, text=True, timeout=60,
    )
    assert text.returncode == 0 and "CALLS/S" in text.stdout and "Echo.__call__" in text.stdout
