"""``zmq-agent-server list`` shows an AutoGen host's agent types and the workers that hold each
(issue 14, bad input 2: a type registered on two workers is allowed, and ``list`` shows both), from
plain msgpack replies only (``ping`` counts the objects that report, ``status`` gives their reports)."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import run_cli

from mesh import _listing
from mesh.client._selection import ServerInfo

pytest.importorskip("autogen_core")

from autogen_core import MessageContext, RoutedAgent, message_handler  # noqa: E402
from test_autogen import Ping  # noqa: E402

from mesh.autogen import MeshWorkerRuntime, MeshWorkerRuntimeHost  # noqa: E402


class Rec(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("records")

    @message_handler
    async def on_ping(self, message: Ping, ctx: MessageContext) -> None:
        pass


def test_list_shows_a_type_on_two_workers_with_both_workers():
    async def main() -> None:
        host = MeshWorkerRuntimeHost("127.0.0.1:0")  # advertised (the default): list finds it
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
            host_addr = f"tcp://{host.address}"

            out = await asyncio.to_thread(run_cli, "list", "--timeout", "0.5")
            assert out.returncode == 0, out.stderr
            text = out.stdout
            assert host_addr in text, text
            rec_line = next(ln for ln in text.splitlines() if ln.strip().startswith("rec:"))
            for w in (w1, w2):
                assert f"{w.worker_id} {addr[w.worker_id]}" in rec_line, text
            assert w3.worker_id not in rec_line
            other = next(ln for ln in text.splitlines() if ln.strip().startswith("other:"))
            assert f"{w3.worker_id} {addr[w3.worker_id]}" in other, text

            out = await asyncio.to_thread(run_cli, "list", "--json", "--peers", host.address, "--timeout", "0.5")
            assert out.returncode == 0, out.stderr
            (row,) = [r for r in json.loads(out.stdout) if r["address"] == host_addr]
            assert row["reports"] == 1
            (directory,) = row["details"]
            assert directory["registered_name"] == "autogen-directory"
            types = directory["detail"]["agent types"]
            assert sorted(types["rec"]) == sorted(f"{w.worker_id} {addr[w.worker_id]}" for w in (w1, w2))
            assert types["other"] == [f"{w3.worker_id} {addr[w3.worker_id]}"]
            assert set(directory["detail"]["workers"]) == set(addr)
        finally:
            for w in workers:
                if w._running:
                    await w.stop()
            await host.stop()

    asyncio.run(asyncio.wait_for(main(), 90))


def test_a_plain_server_is_listed_as_before_and_never_asked_for_its_status(server):
    out = run_cli("list", "--json", "--peers", f"{server.host}:{server.port}", "--timeout", "0.3")
    assert out.returncode == 0, out.stderr
    (row,) = [r for r in json.loads(out.stdout) if r["address"] == server.address]
    assert row["reports"] == 0 and "details" not in row
    out = run_cli("list", "--peers", f"{server.host}:{server.port}", "--timeout", "0.3")
    assert out.returncode == 0 and server.address in out.stdout and out.stdout.count("\n") == 2, out.stdout


def test_listing_without_reports_sends_nothing_and_an_unreadable_report_is_said():
    plain = ServerInfo(name="a", address="tcp://127.0.0.1:1", capacity=4, load=0)
    assert _listing.fetch_reports([plain], timeout=0.1) == {}  # no request at all (no client made)
    host = ServerInfo(name="h", address="tcp://127.0.0.1:2", capacity=4, load=0, reports=1)
    lines = _listing.text_lines([plain, host], {host.address: "CallTimeout: no reply"})
    assert lines[-1] == "  (its report could not be read: CallTimeout: no reply)"
    assert _listing.json_rows([host], {host.address: "CallTimeout: no reply"})[0]["details_error"].startswith("Call")
    assert _listing.text_lines([], {}) == ["no servers found"]
