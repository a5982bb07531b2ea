"""Operator features of zmq-agent-server: several processes, status of each."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

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
