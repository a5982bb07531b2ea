"""Acceptance tests of API.md, third pass: the command's flags doing what they say, security by env."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

import mesh
from conftest import run_cli, free_port
from test_contract_cli import BIN, Start

SECRET = "contract3-a-long-enough-shared-secret"


class Box(metaclass=mesh.RpcMeta):
    def __init__(self, v=0):
        self.v = v

    def get(self):
        return self.v

    def size(self, data):
        return len(data)


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


def test_port_flag_is_the_bound_port(started):
    port = free_port()
    s = started("--port", str(port), "--no-advertise")
    assert s.port == port and s.host == "127.0.0.1"  # loopback unless told otherwise
    assert Box(2, to_dist={"host": "127.0.0.1", "port": port}).get() == 2


def test_name_and_capacity_flags_show_in_status(started):
    s = started("--name", "c3-named", "--capacity", "3", "--no-advertise")
    out = run_cli("status", s.address)
    assert out.returncode == 0, out.stderr
    assert "c3-named" in out.stdout
    assert "3" in out.stdout


def test_max_message_size_flag_is_enforced_and_server_keeps_serving(started):
    s = started("--max-message-size", "100000", "--no-advertise")
    b = Box(1, to_dist={"host": s.host, "port": s.port})
    with pytest.raises(mesh.MessageTooLarge):
        b.size(b"x" * 400_000)
    assert b.size(b"x" * 1000) == 1000
    assert b.get() == 1


def test_stop_of_a_dead_address_is_a_clear_error():
    port = free_port()
    out = run_cli("stop", f"127.0.0.1:{port}", timeout=60)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert str(port) in out.stderr + out.stdout


def test_bad_flag_values_are_usage_errors():
    for args in (["start", "--port", "notaport"], ["start", "--pool-type", "bogus"], ["status"], ["nosuchcmd"]):
        out = run_cli(*args)
        assert out.returncode == 2, (args, out.returncode, out.stderr)
        assert "usage" in out.stderr.lower() and "Traceback" not in out.stderr, args


def test_status_bad_address_form_is_a_clear_error():
    out = run_cli("status", "not an address")
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert (out.stderr + out.stdout).strip()


def test_secret_from_env_on_server_and_client(started, tmp_path):
    s = started("--no-advertise", env={"MESH_SECRET": SECRET})
    # a client process whose environment has the same MESH_SECRET can call
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "import mesh\nfrom test_contract3_cli import Box\n"
        "print(Box(5, to_dist={'host': %r, 'port': %d}).get())\n"
    ) % (os.path.dirname(__file__), s.host, s.port)
    ok = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                        env={**os.environ, "MESH_SECRET": SECRET})
    assert ok.returncode == 0 and ok.stdout.strip() == "5", ok.stderr
    # and one without it gets AuthenticationError (loopback included)
    code_bad = code.replace("print(Box", "try:\n    Box").replace(".get())\n", ".get()\n") + (
        "except mesh.AuthenticationError as e:\n    print('auth', type(e).__name__)\n"
    )
    bad = subprocess.run([sys.executable, "-c", code_bad], capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k != "MESH_SECRET"})
    assert bad.stdout.strip() == "auth AuthenticationError", (bad.stdout, bad.stderr)
    # the command-line tools read the same variable
    assert run_cli("status", s.address, env={"MESH_SECRET": SECRET}).returncode == 0
    refused = run_cli("status", s.address, env={"MESH_SECRET": "another-secret-of-enough-length"})
    assert refused.returncode != 0 and "Traceback" not in refused.stderr


def test_non_loopback_with_secret_env_starts(started):
    s = started("--host", "0.0.0.0", "--no-advertise", env={"MESH_SECRET": SECRET})
    out = run_cli("status", f"127.0.0.1:{s.port}", env={"MESH_SECRET": SECRET})
    assert out.returncode == 0, out.stderr
    assert s.stop() == 0


def test_secret_file_server_and_env_client_in_process(started, tmp_path):
    f = tmp_path / "secret"
    f.write_text(SECRET + "\n")
    s = started("--secret-file", str(f), "--no-advertise")
    mesh.init(secret=SECRET)
    assert Box(7, to_dist={"host": s.host, "port": s.port}).get() == 7


def test_sigterm_with_agents_and_calls_in_flight_exits_0(started):
    s = started("--no-advertise")
    boxes = [Box(i, to_dist={"host": s.host, "port": s.port}) for i in range(5)]
    assert [b.get() for b in boxes] == list(range(5))
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(20) == 0
    assert "Traceback" not in s.proc.stderr.read()


def test_console_command_help_names_every_command():
    out = subprocess.run([BIN, "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    for cmd in ("start", "list", "status", "stop"):
        assert cmd in out.stdout
    start = subprocess.run([BIN, "start", "--help"], capture_output=True, text=True, timeout=30)
    for flag in ("--host", "--port", "--capacity", "--agent-dir", "--name", "--pool-type", "--redis-url",
                 "--max-expire-time", "--max-len", "--max-message-size", "--no-advertise", "--secret-file",
                 "--state-store", "--http", "--http-host", "--http-token-file"):
        assert flag in start.stdout, flag


class Sleeper(metaclass=mesh.RpcMeta):
    @mesh.async_func
    def nap(self, seconds):
        import time

        time.sleep(seconds)
        return "woke"

    def ping(self):
        return "pong"


def test_sigterm_while_a_call_runs_exits_0_soon_and_the_caller_does_not_hang(started):
    import time

    s = started("--no-advertise")
    sl = Sleeper(to_dist={"host": s.host, "port": s.port})
    assert sl.ping() == "pong"
    fut = sl.nap(120)
    t0 = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(30) == 0
    assert time.monotonic() - t0 < 30
    with pytest.raises(mesh.MeshError):  # the running call is lost with its server: an error, never a hang
        fut.result(timeout=30)
    assert time.monotonic() - t0 < 60
