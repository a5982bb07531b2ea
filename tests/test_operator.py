"""zmq-agent-server as an operator runs it: start, status, stop, --agent-dir, --processes, bad input."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest

from conftest import run_cli


def test_processes_flag_runs_n_reachable_servers():
    proc = subprocess.Popen([sys.executable, "-m", "mesh.server", "start", "--port", "0", "--processes", "3", "--no-advertise"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        addresses = [re.search(r"tcp://\S+:\d+", line).group(0) for line in lines]
        pids = {re.search(r"pid=(\d+)", line).group(1) for line in lines}
        assert len(set(addresses)) == 3 and len(pids) == 3
        for address in addresses:
            out = run_cli("status", address, "--json")
            assert out.returncode == 0, out.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        for address in addresses:  # all of them stopped
            assert run_cli("status", address, "--timeout", "2").returncode != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def _start(*extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "mesh.server", "start", "--port", "0", "--no-advertise", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    match = re.search(r"tcp://\S+:\d+", line)
    assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, match.group(0)


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    proc.stdout.close()
    proc.stderr.close()


def test_start_status_stop(tmp_path, monkeypatch):
    import json

    import mesh

    (tmp_path / "ops_agents.py").write_text(
        "import mesh\nclass Clerk(mesh.AgentBase):\n    def reply(self, x=None):\n        return mesh.Msg(self.name, 'ok')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    proc, address = _start("--agent-dir", str(tmp_path), "--no-code", "--capacity", "4")
    try:
        from ops_agents import Clerk

        clerk = Clerk("clerk-1", to_dist={"host": address})  # known to a --no-code server via --agent-dir
        assert clerk(mesh.Msg("u", "hi")).content == "ok"
        info = json.loads(run_cli("status", address, "--json").stdout)
        assert info["capacity"] == 4 and info["uptime"] >= 0 and "load" in info and info["rss"] > 0
        agents = info["agents"]
        assert [(a["class"], a["name"], a["queue"], a["served"]) for a in agents] == [("Clerk", "clerk-1", 0, 1)]
        text = run_cli("status", address.replace("tcp://", ""))  # host:port works too
        assert text.returncode == 0 and "Clerk" in text.stdout and "clerk-1" in text.stdout
        assert run_cli("stop", address).returncode == 0
        assert proc.wait(15) == 0
    finally:
        _end(proc)


def test_agent_dir_that_fails_to_import_refuses_to_start(tmp_path):
    (tmp_path / "broken.py").write_text("raise RuntimeError('missing API key')\n")
    out = run_cli("start", "--port", "0", "--no-advertise", "--agent-dir", str(tmp_path))
    assert out.returncode != 0
    assert "broken.py" in out.stderr and "missing API key" in out.stderr and "Traceback" not in out.stderr


def test_agent_dir_file_named_like_a_loaded_module_refuses_to_start(tmp_path):
    (tmp_path / "logging.py").write_text("raise RuntimeError('never read')\n")
    out = run_cli("start", "--port", "0", "--no-advertise", "--agent-dir", str(tmp_path))
    assert out.returncode == 2
    assert "logging.py" in out.stderr and "rename" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "flag", [["--lease-ttl", "0"], ["--lease-ttl", "-1"], ["--max-expire-time", "nan"], ["--grace", "-1"],
             ["--max-len", "0"], ["--processes", "0"]],
)
def test_values_that_cannot_work_are_refused(flag):
    out = run_cli("start", "--port", "0", "--no-advertise", *flag)
    assert out.returncode == 2 and flag[0].lstrip("-").split("-")[0] in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "args", [["start", "--port", "notanumber"], ["start", "--bogus"], ["frobnicate"], ["start", "--log-level", "BOGUS"]],
)
def test_bad_flags_get_usage_not_traceback(args):
    out = run_cli(*args)
    assert out.returncode == 2 and "usage:" in out.stderr and "Traceback" not in out.stderr


def test_status_of_nothing_fails_clearly():
    out = run_cli("status", "127.0.0.1:1", "--timeout", "3")
    assert out.returncode != 0 and "127.0.0.1:1" in out.stderr and "Traceback" not in out.stderr


def test_sigint_stops_cleanly():
    proc, _ = _start()
    try:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) in (0, 130)
    finally:
        _end(proc)


def test_list_names_announced_servers_it_cannot_use(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("operator-secret\n")
    proc, address = _start("--name", "locked-one", "--secret-file", str(secret))
    try:
        out = run_cli("list", "--timeout", "0.2", "--peers", address.replace("tcp://", ""))
        assert out.returncode == 0, out.stderr
        assert "no servers found" in out.stdout
        assert address in out.stderr and "secret" in out.stderr and "Traceback" not in out.stderr
    finally:
        _end(proc)


def test_list_with_static_peers_finds_unadvertised_servers():
    import json

    proc, address = _start("--name", "static-one")
    try:
        out = run_cli("list", "--json", "--timeout", "0.2", "--peers", address.replace("tcp://", ""))
        assert out.returncode == 0, out.stderr
        found = json.loads(out.stdout)
        assert [(s["name"], s["address"]) for s in found] == [("static-one", address)]
    finally:
        _end(proc)
