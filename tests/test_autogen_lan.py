"""The seed's two-worker AutoGen program on three virtual hosts (issue 14, point 2).

Host 1 runs the ``MeshWorkerRuntimeHost``, hosts 2 and 3 one ``MeshWorkerRuntime`` each (the seed's
``autogen_hello_distributed.py``, only the runtime imports changed from AutoGen's tutorial). Every
message goes over the virtual Ethernet, authenticated and encrypted with ``MESH_SECRET`` (a worker
off loopback needs it), and each agent prints its five lines.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("autogen_core")

from vlan import LineReader, VirtualLan, in_isolated_netns  # noqa: E402

pytestmark = pytest.mark.skipif(not in_isolated_netns() or os.geteuid() != 0,
                                reason="needs root in an isolated network namespace")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = os.path.join(ROOT, "tests", "seeds", "autogen_hello_distributed.py")
PORT = 7150


def _env() -> dict:
    e = dict(os.environ)
    e.pop("MESH_REGISTRY_DIR", None)
    e.update({"MESH_SECRET": "autogen-lan-test-secret", "MESH_DISCOVERY": "0", "PYTHONUNBUFFERED": "1",
              "PYTHONPATH": os.pathsep.join([ROOT, e.get("PYTHONPATH", "")]), "MESH_HEARTBEAT_TIMEOUT": "2"})
    return e


def _start(lan: VirtualLan, i: int, *args: str) -> tuple[subprocess.Popen, LineReader]:
    proc = lan.popen(i, [sys.executable, SEED, *args], stdout=subprocess.PIPE, text=True, env=_env())
    return proc, LineReader(proc.stdout)


def _lines(out: LineReader, name: str) -> list[str]:
    return [out.wait_for(lambda ln: ln if ln.startswith(f"{name}: ") else None, timeout=30) for _ in range(5)]


@pytest.mark.slow
def test_seed_program_on_three_virtual_hosts():
    with VirtualLan(n=3) as lan:
        address = f"{lan.host_ip(1)}:{PORT}"
        host, hout = _start(lan, 1, "host", address)
        assert hout.wait_for(lambda ln: ln if ln.startswith("host ready ") else None, timeout=30).split()[-1] == address
        w1, out1 = _start(lan, 2, "worker", "worker1", address)
        out1.wait_for(lambda ln: ln == "registered worker1", timeout=30)
        w2, out2 = _start(lan, 3, "worker", "worker2", address, "--publish")
        assert _lines(out1, "worker1") == [f"worker1: Hello x {i}" for i in range(1, 6)]
        assert _lines(out2, "worker2") == [f"worker2: Hello x {i}" for i in range(1, 6)]
        for proc in (w2, w1, host):  # stop_when_signal: SIGTERM stops each cleanly
            assert VirtualLan.stop_process(proc, grace=20) == 0
