"""The plain mDNS probe of a ``probe_first`` browser (the mesh's own): zeroconf only once someone answers.

Tests that open sockets skip unless this is an isolated network namespace (only ``lo``):
run them with ``bin/isolated .venv/bin/python -m pytest tests/test_discovery_probe.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from vlan import in_isolated_netns

from discovery import Advertiser, Browser
from discovery._hosts import ipv4_addresses
from discovery._probe import is_answer, ptr_query

pytestmark = pytest.mark.timeout(60)

needs_netns = pytest.mark.skipif(
    not in_isolated_netns(),
    reason="opens sockets and multicasts: run inside an isolated network namespace (bin/isolated)",
)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def service_type() -> str:
    return f"_dp{uuid.uuid4().hex[:8]}._tcp.local."


@pytest.fixture
def no_thread_left():
    before = set(threading.enumerate())
    yield
    left = [t.name for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not left, left


def test_the_probe_asks_the_same_question_as_zeroconf():
    from zeroconf import DNSOutgoing, DNSQuestion  # type: ignore[attr-defined]

    out = DNSOutgoing(0, False, 4321)
    out.add_question(DNSQuestion("_agentmesh._tcp.local.", 12, 1))
    assert ptr_query("_agentmesh._tcp.local.", 4321) == out.packets()[0]


def test_only_an_answer_to_our_query_counts():
    answer = bytes.fromhex("10e1" "8400" "0000" "0001" "0000" "0000")  # id 4321, a response, one record
    assert is_answer(answer, 4321)
    assert not is_answer(answer, 4322)  # another query's
    assert not is_answer(bytes.fromhex("10e1" "0000" "0001" "0000" "0000" "0000"), 4321)  # a query, not an answer
    assert not is_answer(bytes.fromhex("10e1" "8400" "0000" "0000" "0000" "0000"), 4321)  # no record
    assert not is_answer(bytes.fromhex("10e1" "8403" "0000" "0001" "0000" "0000"), 4321)  # an error code
    assert not is_answer(b"\x10\xe1\x84", 4321)


def test_this_hosts_ipv4_addresses_without_ifaddr():
    found = ipv4_addresses()
    if sys.platform.startswith("linux"):
        assert found and "127.0.0.1" in found and found[-1] == "127.0.0.1"  # loopback last
        from discovery._net import local_addresses

        assert set(found) <= set(local_addresses())
    else:
        assert found is None


@needs_netns
def test_a_first_look_that_finds_nothing_never_imports_zeroconf(service_type, tmp_path):
    code = (
        "import sys, time; import discovery, discovery._browser\n"
        "discovery._browser._PROBE_WINDOW = 60.0\n"  # zeroconf's background start: not within this test
        f"b = discovery.Browser(probe_first=True, service_type={service_type!r}, registry_dir={str(tmp_path)!r})\n"
        "b.start()\n"
        "while b.asked_at() is None: time.sleep(0.001)\n"
        "time.sleep(0.1)\n"  # well past the 60 ms the mesh waits after the query
        "assert b.servers() == [] and b.asked_at() is not None\n"
        "print(sorted(m for m in ('zeroconf', 'ifaddr', 'asyncio') if m in sys.modules))\n"
        "b.close()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@needs_netns
def test_an_answered_probe_starts_zeroconf_which_reads_the_records(service_type, no_thread_left):
    with Advertiser("probed", "127.0.0.1", 5201, capacity=3, local=False, service_type=service_type) as adv:
        assert adv.wait_registered(10)
        with Browser(local=False, static_peers=[], service_type=service_type, probe_first=True) as browser:
            t0 = time.monotonic()
            (rec,) = browser.wait(10)
            assert (rec.name, rec.address, rec.capacity) == ("probed", "tcp://127.0.0.1:5201", 3)
            assert browser._probe is not None and browser._probe.heard  # zeroconf started on the answer
            assert time.monotonic() - t0 < 10  # typically ~0.1 s: the probe's answer, then zeroconf's start


@needs_netns
def test_a_server_that_comes_after_an_unanswered_probe_is_still_found(service_type, no_thread_left):
    with Browser(local=False, static_peers=[], service_type=service_type, probe_first=True) as browser:
        while browser.asked_at() is None:
            time.sleep(0.001)
        assert browser.wait(0.1) == []
        with Advertiser("late", "127.0.0.1", 5202, local=False, service_type=service_type):
            assert [r.name for r in browser.wait(10)] == ["late"]  # zeroconf browses in the background


@needs_netns
def test_closing_while_the_probe_listens_leaves_nothing_behind(service_type, no_thread_left):
    browser = Browser(local=False, static_peers=[], service_type=service_type, probe_first=True)
    browser.start()
    browser.close()
    assert browser._mdns is None  # closed before the window ended: zeroconf never started
    browser.close()


@needs_netns
def test_chosen_interfaces_are_probed_and_checked_at_once(service_type, monkeypatch):
    monkeypatch.setenv("MESH_INTERFACES", "no-such-interface0")
    with pytest.raises(ValueError, match="no-such-interface0"):
        Browser(service_type=service_type, probe_first=True)
    monkeypatch.setenv("MESH_INTERFACES", "127.0.0.1")
    with Browser(local=False, static_peers=[], service_type=service_type, probe_first=True) as browser:
        assert browser._probe is not None and browser._probe.addresses == ["127.0.0.1"]


def test_a_mesh_process_that_finds_no_server_never_imports_zeroconf(tmp_path):
    """The first to_dist() with discovery on and nobody there: the child server, and no zeroconf."""
    if not in_isolated_netns():
        pytest.skip("multicasts: run inside an isolated network namespace (bin/isolated)")
    code = (
        "import sys\n"
        "import mesh, discovery._browser\n"
        "discovery._browser._PROBE_WINDOW = 60.0\n"  # (a loaded machine may take a second to start the child)
        "class Echo(metaclass=mesh.RpcMeta):\n"
        "    def echo(self, x):\n"
        "        return x\n"
        "obj = Echo().to_dist()\n"
        "assert obj.echo(7) == 7\n"
        "from mesh import _placement\n"
        "assert obj._mesh_address == _placement.child().address\n"
        "print('zeroconf' in sys.modules)\n"
        "mesh.shutdown()\n"
    )
    env = dict(os.environ, MESH_DISCOVERY="1", MESH_SERVICE_TYPE=f"_dp{uuid.uuid4().hex[:8]}._tcp.local.",
               MESH_REGISTRY_DIR=str(tmp_path / "registry"))
    env.pop("MESH_PEERS", None)
    env.pop("MESH_REDIS_DISCOVERY_URL", None)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"
