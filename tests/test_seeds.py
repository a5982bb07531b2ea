"""AgentScope's distributed-mode samples run on mesh with only their imports changed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

SEEDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def run(script: str, *args: str, timeout: float = 60) -> str:
    proc = subprocess.run(
        [sys.executable, script, *args], cwd=SEEDS, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "SEED_SLEEP": "0.5"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


class Background:
    """A seed server script running in the background, stopped by PID."""

    def __init__(self, script: str, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, script, *args], cwd=SEEDS, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()  # blocks until the script says it is ready (or exits)
        assert "server ready" in line, f"server script failed to start: {line!r}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


def times(out: str) -> tuple[float, float, float]:
    init = float(re.search(r"初始化的耗时：([\d.]+)", out).group(1))
    seq = float(re.search(r"不使用分布式模式的耗时：([\d.]+)", out).group(1))
    dist = float(re.search(r"使用分布式模式的耗时：([\d.]+)", out.split("不使用分布式模式的耗时")[1]).group(1))
    return init, seq, dist


@pytest.mark.parametrize("mode", ["child", "init_true"])
def test_webagent_child_mode(mode):
    out = run("dist_main.py", mode)
    assert out.count("Answer from W") == 10
    _, seq, dist = times(out)
    assert dist < seq / 2.5  # 5 agents in parallel vs one after another


@pytest.mark.parametrize("mode", ["server", "init_dict"])
def test_webagent_independent_server(mode):
    server = Background("dist_server.py")
    try:
        out = run("dist_main.py", mode)
    finally:
        server.stop()
    assert out.count("Answer from W") == 10
    init, seq, dist = times(out)
    assert dist < seq / 2.5
    assert server.proc.returncode in (0, 130, -signal.SIGINT)


def test_example_sync_and_async_methods():
    out = run("example_async.py")
    assert "ok" in out
    sync = float(re.search(r"Sync func cost: ([\d.e-]+)", out).group(1))
    asyn = float(re.search(r"Async func cost: ([\d.e-]+)", out).group(1))
    assert asyn < sync / 5  # async calls return at once


def test_dialogue_centralised_and_distributed():
    assert "dialogue ok" in run("dialogue.py")


def test_developer_guide_launcher():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Background("launcher.py", str(port))
    try:
        code = (
            "import mesh\nfrom myagents import AgentA, AgentC\n"
            f"a = AgentA('a', to_dist=dict(host='localhost', port={port}))\n"
            f"c = AgentC('c').to_dist(host='localhost', port={port})\n"
            "print(a(None).content + c(None).content)\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], cwd=SEEDS, capture_output=True, text=True, timeout=30)
        assert proc.stdout.strip() == "AC", proc.stderr
    finally:
        server.stop()
