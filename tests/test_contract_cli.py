"""Acceptance tests of API.md: the zmq-agent-server command."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

import mesh
from conftest import run_cli, wait_until

BIN = os.path.join(os.path.dirname(sys.executable), "zmq-agent-server")
ADDR = re.compile(r"tcp://([\w.\-]+):(\d+)")


class Start:
    """``zmq-agent-server start ARGS`` in the foreground, until its address line."""

    def __init__(self, *args: str, cmd: list[str] | None = None, env: dict | None = None) -> None:
        cmd = cmd or [BIN]
        self.proc = subprocess.Popen(
            [*cmd, "start", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})},
        )
        self.line = self.proc.stdout.readline()
        m = ADDR.search(self.line)
        assert m, f"no address line: {self.line!r} {self.proc.stderr.read() if self.proc.poll() is not None else ''}"
        self.host, self.port = m.group(1), int(m.group(2))
        self.address = f"tcp://{self.host}:{self.port}"

    def stop(self, sig=signal.SIGTERM, timeout=20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc.stdout.close()
            self.proc.stderr.close()


class Box(metaclass=mesh.RpcMeta):
    def __init__(self, v=0):
        self.v = v

    def get(self):
        return self.v


@pytest.fixture
def started():
    made: list[Start] = []

    def make(*args, **kw):
        s = Start(*args, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop(signal.SIGKILL)


def test_console_command_exists():
    assert os.path.exists(BIN)


def test_start_prints_address_accepts_calls_sigterm_exits_0(started):
    s = started("--port", "0", "--no-advertise")
    b = Box(3, to_dist={"host": s.host, "port": s.port})
    assert b.get() == 3
    mesh.shutdown()
    assert s.stop(signal.SIGTERM) == 0


def test_start_sigint_exits_0_or_130(started):
    s = started("--no-advertise")
    assert s.stop(signal.SIGINT) in (0, 130)


def test_python_dash_m_mesh_server(started):
    s = started("--no-advertise", cmd=[sys.executable, "-m", "mesh.server"])
    assert Box(1, to_dist={"host": s.host, "port": s.port}).get() == 1
    mesh.shutdown()
    assert s.stop() == 0


def test_start_accepts_every_documented_option(started, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("a-long-enough-shared-secret-value\n")
    (tmp_path / "agents").mkdir()
    s = started(
        "--host", "127.0.0.1", "--port", "0", "--capacity", "3", "--agent-dir", str(tmp_path / "agents"),
        "--name", "cli-contract", "--pool-type", "local", "--max-expire-time", "100", "--max-len", "50",
        "--max-message-size", "1000000", "--no-advertise", "--secret-file", str(secret),
        "--state-store", str(tmp_path / "states"),
    )
    out = run_cli("status", s.address, env={"MESH_SECRET": "a-long-enough-shared-secret-value"})
    assert out.returncode == 0, out.stderr
    assert "cli-contract" in out.stdout or s.address in out.stdout or str(s.port) in out.stdout
    assert s.stop() == 0


def test_status_lists_agents_both_address_forms(started):
    s = started("--no-advertise")

    class Named(mesh.AgentBase):
        def reply(self, x):
            return x

    agent = Named("alice-contract", to_dist={"host": s.host, "port": s.port})
    assert agent.name == "alice-contract"
    for addr in (s.address, f"{s.host}:{s.port}"):
        out = run_cli("status", addr)
        assert out.returncode == 0, out.stderr
        assert "Named" in out.stdout
        assert "alice-contract" in out.stdout
        assert agent.agent_id in out.stdout
        low = out.stdout.lower()
        assert "uptime" in low and "load" in low and ("queue" in low or "depth" in low)


def test_stop_asks_server_to_shut_down(started):
    s = started("--no-advertise")
    out = run_cli("stop", f"{s.host}:{s.port}")
    assert out.returncode == 0, out.stderr
    assert s.proc.wait(20) == 0


def test_list_shows_discovered_servers(started):
    env = {"MESH_DISCOVERY": "1"}
    s = started("--name", "listed-contract", env=env)
    out = wait_until(lambda: (r := run_cli("list", env=env)).returncode == 0 and s.address in r.stdout and r,
                     timeout=20)
    row = [line for line in out.stdout.splitlines() if s.address in line]
    assert len(row) == 1 and "listed-contract" in row[0]


def test_status_of_nothing_is_a_clear_error():
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    out = run_cli("status", f"127.0.0.1:{port}")
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert str(port) in out.stderr + out.stdout


def test_non_loopback_without_secret_refuses_to_start():
    env = {k: v for k, v in os.environ.items() if k != "MESH_SECRET"}
    proc = subprocess.run([BIN, "start", "--host", "0.0.0.0", "--no-advertise"], capture_output=True,
                          text=True, timeout=30, env=env)
    assert proc.returncode != 0
    assert "secret" in (proc.stderr + proc.stdout).lower()
    assert "Traceback" not in proc.stderr
