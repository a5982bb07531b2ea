"""``zmq-agent-server status`` on an AutoGen host lists each agent type with every worker that holds it
(issue 14, bad input 2: a type registered on two workers is allowed, and both are shown); the
admin hook behind it (``__mesh_status__``) is bounded and never breaks a server's status."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("autogen_core")

from autogen_core import MessageContext, RoutedAgent, message_handler  # noqa: E402
from conftest import ROOT  # noqa: E402
from test_autogen import Ping  # noqa: E402

from mesh import _views  # noqa: E402
from mesh.autogen import MeshWorkerRuntime, MeshWorkerRuntimeHost  # noqa: E402
from mesh.server import _admin  # noqa: E402


class Rec(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("records")

    @message_handler
    async def on_ping(self, message: Ping, ctx: MessageContext) -> None:
        pass


def _cli_status(address: str, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "mesh.server", "status", address, *extra], env=env,
                          capture_output=True, text=True, timeout=30)


def test_status_lists_a_type_on_two_workers_with_both_workers():
    async def main() -> None:
        host = MeshWorkerRuntimeHost("127.0.0.1:0", advertise=False)
        host.start()
        workers = [MeshWorkerRuntime(host_address=host.address) for _ in range(3)]
        try:
            for w in workers:
                await w.start()
            w1, w2, w3 = workers
            await Rec.register(w1, "rec", Rec)
            await Rec.register(w2, "rec", Rec)  # the same type on a second worker: allowed
            await Rec.register(w3, "other", Rec)
            addr = {w.worker_id: w._server.address for w in workers}

            out = await asyncio.to_thread(_cli_status, host.address)
            assert out.returncode == 0, out.stderr
            text = out.stdout
            rec_line = next(ln for ln in text.splitlines() if ln.strip().startswith("rec:"))
            for w in (w1, w2):
                assert f"{w.worker_id} {addr[w.worker_id]}" in rec_line, text
            assert w3.worker_id not in rec_line
            assert "other:" in text and w3.worker_id in text

            out = await asyncio.to_thread(_cli_status, host.address, "--json")
            assert out.returncode == 0, out.stderr
            (row,) = [a for a in json.loads(out.stdout)["agents"] if a["registered_name"] == "autogen-directory"]
            types = row["detail"]["agent types"]
            assert sorted(types["rec"]) == sorted(f"{w.worker_id} {addr[w.worker_id]}" for w in (w1, w2))
            assert set(row["detail"]["workers"]) == set(addr)

            # a worker's own server shows its endpoint with the types it holds
            out = await asyncio.to_thread(_cli_status, w1._server.address, "--json")
            (ep,) = [a for a in json.loads(out.stdout)["agents"] if a["class"] == "Endpoint"]
            assert ep["detail"] == {"worker": w1.worker_id, "agent types": ["rec"]}

            # the host's own report agrees
            assert sorted(r["worker"] for r in host.status() if r["types"] == ["rec"]) == sorted([w1.worker_id,
                                                                                                 w2.worker_id])
        finally:
            for w in workers:
                if w._running:
                    await w.stop()
            await host.stop()

    asyncio.run(asyncio.wait_for(main(), 60))


class _Odd:
    def __init__(self, report):
        self.report = report

    def __mesh_status__(self):
        if isinstance(self.report, BaseException):
            raise self.report
        return self.report


def test_the_status_hook_is_bounded_and_never_raises():
    assert _admin._detail(object()) == {}
    assert _admin._detail(None) == {}
    assert _admin._detail(_Odd({"a": [1, "x"]})) == {"detail": {"a": [1, "x"]}}
    failed = _admin._detail(_Odd(RuntimeError("nope")))["detail"]
    assert failed.startswith("__mesh_status__ failed: RuntimeError")
    big = _admin._detail(_Odd({"k": list(range(10_000)), "s": "y" * 10_000, "o": object(), "n": 2**80}))["detail"]
    assert len(big["k"]) == 200 and len(big["s"]) == 200 and isinstance(big["o"], str) and isinstance(big["n"], str)
    deep: dict = {}
    cur = deep
    for _ in range(50):
        cur["d"] = {}
        cur = cur["d"]
    assert "{" in str(_admin._detail(_Odd(deep))["detail"]["d"]["d"]["d"]["d"])  # cut to a repr at depth 4
    import msgpack

    msgpack.packb(big)  # plain data: a status reply stays decodable without pickles


leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | st.binary(max_size=20)
value = st.recursive(leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                     max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(value)
def test_cli_prints_any_detail_a_peer_sends(detail):
    lines = _views._detail_lines(detail)
    assert all(isinstance(ln, str) for ln in lines)
