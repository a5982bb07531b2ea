"""Acceptance tests of API.md, fifth pass: a durable object (``checkpoint=True`` / ``max_restarts=N``)
that the user deleted is gone, as a plain object is: ``AgentNotFound``, never a restart.

It used to give ``ServerUnavailable`` "its server is gone ... max_restarts is used up" (the server
was alive), and with ``max_restarts`` left, the proxy tried to restart the deleted object (it even
started a child server to take it)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest

import mesh
from conftest import TESTS, wait_until
from contract5_lib import Calc

OPTIONS = [{"checkpoint": True}, {"checkpoint": True, "max_restarts": 2}, {"max_restarts": 2}]


@pytest.fixture
def durable_server(tmp_path):
    store = str(tmp_path / "states")
    srv = mesh.AgentServer(port=0, advertise=False, state_store=store).launch(in_subprocess=True)
    try:
        yield srv, store
    finally:
        srv.shutdown()


@pytest.mark.parametrize("options", OPTIONS, ids=["checkpoint", "checkpoint+restarts", "restarts"])
def test_a_deleted_durable_object_is_not_found_and_never_restarted(durable_server, options):
    srv, _ = durable_server
    c = Calc(2, to_dist={"host": srv.host, "port": srv.port, **options})
    assert c.note("a") == ["a"]
    mesh.delete(c)
    for _ in range(2):  # every later call, sync or async, says the same
        with pytest.raises(mesh.AgentNotFound):
            c.mul(1)
        with pytest.raises(mesh.AgentNotFound):
            c.mul.remote(1).result(timeout=20)
    with pytest.raises(mesh.AgentNotFound):
        mesh.delete(c)  # "AgentNotFound: it was already gone"
    assert Calc(3, to_dist={"host": srv.host, "port": srv.port, **options}).mul(2) == 6  # the server lives


CHILD = r"""
import pickle, sys
sys.path.insert(0, sys.argv[1])
import mesh
c = pickle.loads(sys.stdin.buffer.read())
for _ in range(2):
    try:
        c.note("other")
        print("served")
    except mesh.AgentNotFound:
        print("not found")
    except mesh.MeshError as exc:
        print("other error", type(exc).__name__, exc)
mesh.shutdown()
"""


def test_a_durable_object_deleted_by_its_creator_is_not_found_by_another_process(durable_server):
    srv, store = durable_server
    c = Calc(2, to_dist={"host": srv.host, "port": srv.port, "checkpoint": True, "max_restarts": 2})
    assert c.note("a") == ["a"]
    blob = pickle.dumps(c)
    mesh.delete(c)
    wait_until(lambda: not os.path.exists(os.path.join(store, c._mesh_id)), timeout=10)  # its checkpoint went too
    out = subprocess.run([sys.executable, "-c", CHILD, TESTS], input=blob, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    assert out.stdout.decode().split("\n")[:2] == ["not found", "not found"], out.stdout.decode()
