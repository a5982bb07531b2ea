"""A child server starts fast: the launching process loads no serving machinery, and
``ServerOptions`` (no longer a dataclass) behaves as one did."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mesh._core.options import ServerOptions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = r"""
import json, sys
import mesh
server = mesh.AgentServer(port=0, advertise=False)
before = set(sys.modules)
if sys.argv[1] == "launch":
    server.launch(in_subprocess=True)
    loaded_by_launch = sorted(set(sys.modules) - before)
    server.shutdown()
else:
    loaded_by_launch = []
print(json.dumps({"modules": sorted(sys.modules), "by_launch": loaded_by_launch}))
"""

SERVING = ("zmq", "transport", "mesh.server._dispatch", "mesh.server._host", "mesh.edge", "cloudpickle", "msgpack",
           "dataclasses", "inspect")


def _probe(mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": ROOT, "MESH_DISCOVERY": "0"}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _serving(modules: list[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in SERVING or m.startswith(SERVING)}


def test_making_an_agent_server_loads_no_serving_machinery():
    assert _serving(_probe("make")["modules"]) == set()


def test_launching_a_child_server_loads_no_serving_machinery_here():
    got = _probe("launch")
    assert "subprocess" in got["by_launch"]  # the measure works: launch() did load what it needs
    assert _serving(got["modules"]) == set()


def test_a_server_in_this_process_still_loads_its_machinery_when_it_starts():
    env = {**os.environ, "PYTHONPATH": ROOT, "MESH_DISCOVERY": "0"}
    code = ("import sys, mesh\n"
            "with mesh.AgentServer(port=0, advertise=False) as s:\n"
            "    assert s.port > 0\n"
            "print('transport' in sys.modules, 'mesh.server._dispatch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]


def test_server_options_behave_as_the_dataclass_did():
    a = ServerOptions(port=5, capacity=3)
    assert a == ServerOptions(port=5, capacity=3) and a != ServerOptions(port=6, capacity=3)
    assert repr(a).startswith("ServerOptions(host='127.0.0.1', port=5, capacity=3, ")
    assert list(vars(a))[:3] == ["host", "port", "capacity"] and "secret" in vars(a)
    assert ServerOptions("127.0.0.1", 7).port == 7  # positional, in field order
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        ServerOptions(bogus=1)
    with pytest.raises(TypeError, match="multiple values"):
        ServerOptions("127.0.0.1", host="127.0.0.1")
    with pytest.raises(TypeError):
        hash(a)
    with pytest.raises(ValueError, match="port"):
        ServerOptions(port=-1)
    assert ServerOptions.capacity == 32  # class attributes hold the defaults, as a dataclass's did


def test_the_secret_still_defaults_to_the_environment(monkeypatch):
    monkeypatch.setenv("MESH_SECRET", "s3cret-s3cret-s3cret")
    assert ServerOptions().secret == b"s3cret-s3cret-s3cret"
    monkeypatch.setenv("MESH_SECRET", "")
    assert ServerOptions().secret is None
    assert ServerOptions(secret="x").secret == b"x"
