"""Acceptance tests of API.md, sixth pass: "Extras are installed with pip's extras syntax and imported
only when used". A user without an extra who uses what needs it gets an error that names the extra
to install (README: ``[redis]``, ``[autogen]``, ``[http]``), not a bare ``No module named ...``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT

# a process in which the extra's packages cannot be imported, as where they are not installed
BLOCKER = r"""
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))

class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, _Absent())
sys.argv = sys.argv[1:]
"""

HTTP = "a2a,uvicorn,starlette,sse_starlette,prometheus_client,httpx"


def _without(packages: str, code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + code, packages, *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip


def _last_error(out: subprocess.CompletedProcess) -> str:
    return (out.stderr.strip().splitlines() or [""])[-1]


def test_mesh_autogen_without_the_extra_names_it():
    out = _without("autogen_core", "import mesh.autogen\nfrom mesh.autogen import MeshWorkerRuntime")
    assert out.returncode == 1
    assert _last_error(out).startswith("ImportError") and "zmq-agent-mesh[autogen]" in _last_error(out), out.stderr


def test_mesh_a2a_without_the_extra_names_it():
    out = _without(HTTP, "import mesh.a2a")
    assert out.returncode == 1
    assert _last_error(out).startswith("ImportError") and "zmq-agent-mesh[http]" in _last_error(out), out.stderr


def test_a_server_with_http_without_the_extra_names_it_from_python_and_the_command_line():
    code = (
        "import mesh\n"
        "try:\n"
        "    mesh.AgentServer(port=0, advertise=False, http_port=0).launch(in_subprocess=False)\n"
        "except ValueError as exc:\n"
        "    print(exc)\n"
    )
    out = _without(HTTP, code)
    assert out.returncode == 0 and "zmq-agent-mesh[http]" in out.stdout, out.stdout + out.stderr
    cli = "import runpy; runpy.run_module('mesh.server', run_name='__main__', alter_sys=True)"
    out = _without(HTTP, cli, "start", "--port", "0", "--no-advertise", "--http", "0")
    assert out.returncode == 2 and "zmq-agent-mesh[http]" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_a_redis_pool_without_the_extra_names_it():
    code = (
        "import mesh\nmesh.AgentServer(port=0, advertise=False, pool_type='redis', redis_url='redis://127.0.0.1:9/0')"
    )
    code += ".launch(in_subprocess=False)"
    out = _without("redis", code)
    assert out.returncode == 1
    assert _last_error(out).startswith("ImportError") and "zmq-agent-mesh[redis]" in _last_error(out), out.stderr


@pytest.mark.timeout(60)
def test_a_redis_state_store_without_the_extra_names_it_and_not_another_setting():
    # API.md, "Durable agents": state_store=URL where URL is redis://...; the error is about that
    # store, not about pool_type (which the user did not set)
    code = (
        "import mesh\n"
        "class Counter(metaclass=mesh.RpcMeta):\n"
        "    def __init__(self):\n"
        "        self.n = 0\n"
        "srv = mesh.AgentServer(port=0, advertise=False, state_store='redis://127.0.0.1:9/0')\n"
        "srv.launch(in_subprocess=False)\n"
        "try:\n"
        "    Counter(to_dist={'host': srv.host, 'port': srv.port, 'checkpoint': True})\n"
        "except ImportError as exc:\n"
        "    print('ERROR', str(exc).splitlines()[0])\n"
        "finally:\n"
        "    mesh.shutdown()\n"
        "    srv.shutdown()\n"
    )
    out = _without("redis", code)
    line = [x for x in out.stdout.splitlines() if x.startswith("ERROR")]
    assert line, out.stdout + out.stderr[-2000:]
    assert "zmq-agent-mesh[redis]" in line[0] and "state store" in line[0], line[0]
    assert "pool_type" not in line[0], line[0]
