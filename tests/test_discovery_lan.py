"""Discovery across a 3-host virtual LAN (network namespaces on a bridge, 198.18.0.0/24).

Servers are advertised by ``python -m discovery advertise`` on hosts 1 and 2; browsers run
``python -m discovery browse --json`` on host 3. Everything happens inside the isolated
namespace the suite runs in: run with ``/work/shared/tools/isolated .venv/bin/python -m pytest``.

What a link flap does (observed here, and what these tests pin down):

- While a host is cut off, a *running* browser elsewhere keeps listing its servers: mDNS
  records are hints and live for minutes (120 s SRV/A, 75 min PTR) without a goodbye.
  A *fresh* browser does not find them.
- When the link comes back, a fresh browser finds them at once (its one-shot query is answered).
- A server that registered while its host was cut off was never heard, and running browsers
  stop querying after their startup queries (0.1, 1, 5, 14 s). The advertiser therefore
  re-announces when a link comes up (rtnetlink), and a running browser finds it within a second.
- Likewise, a browser whose own link comes back queries again, so it hears of servers that
  started while it was cut off.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from vlan import LineReader, VirtualLan, in_isolated_netns

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not in_isolated_netns(), reason="builds a virtual LAN: run inside an isolated namespace"),
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2"),
]


class Node:
    """One discovery CLI process on a virtual host, with its stdout as JSON lines."""

    def __init__(self, lan: VirtualLan, host: int, args: list[str], env: dict[str, str]) -> None:
        self.proc = lan.popen(
            host, [sys.executable, "-m", "discovery", *args, "--json", "--stdin-eof", "-v"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        )
        self.out = LineReader(self.proc.stdout)
        self.err = LineReader(self.proc.stderr)

    def expect(self, predicate: Any, timeout: float) -> Any:
        return self.out.wait_for(lambda line: predicate(json.loads(line)), timeout)

    def stop(self, timeout: float = 5.0) -> int:
        """Close stdin (a clean stop: the process withdraws) and wait for the exit code."""
        self.proc.stdin.close()
        return self.proc.wait(timeout)

    def log_has(self, text: str, timeout: float) -> str:
        return self.err.wait_for(lambda line: text in line and line, timeout)


@pytest.fixture
def lan() -> Iterator[VirtualLan]:
    with VirtualLan(n=3, prefix="dl") as lan:
        yield lan


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), XDG_RUNTIME_DIR=str(tmp_path),
               MESH_SERVICE_TYPE=f"_dl{uuid.uuid4().hex[:8]}._tcp.local.")
    env.pop("MESH_REGISTRY_DIR", None)  # the default registry: per network namespace
    env.pop("MESH_PEERS", None)
    return env


def names(table: dict) -> list[str]:
    return sorted(s["name"] for s in table["servers"])


def has(*wanted: str):
    return lambda table: names(table) == sorted(wanted) and table


def browse_once(lan: VirtualLan, host: int, env: dict[str, str], timeout: float, *extra: str) -> list[str]:
    out = lan.run(host, [sys.executable, "-m", "discovery", "browse", "--json", "--once", "--timeout", str(timeout),
                         *extra], capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout + 10)
    assert out.returncode == 0, out.stderr
    return names(json.loads(out.stdout))


def advertise(lan: VirtualLan, host: int, name: str, env: dict[str, str], *extra: str) -> Node:
    node = Node(lan, host, ["advertise", name, lan.host_ip(host), str(7000 + host), *extra], env)
    node.expect(lambda e: e["event"] == "started", 10)
    return node


# "--no-probe": advertised by the plain responder (discovery._responder), as mesh servers are;
# probing: by zeroconf. Browsers are zeroconf in both.
RESPONDERS = pytest.mark.parametrize("responder", [[], ["--no-probe"]], ids=["zeroconf", "plain"])


@RESPONDERS
def test_servers_on_two_hosts_are_found_dropped_on_goodbye_and_found_after_a_link_flap(lan, env, responder):
    browser = Node(lan, 3, ["browse"], env)
    browser.expect(has(), 10)
    s1 = advertise(lan, 1, "s1", env, "--capacity", "4", *responder)
    s2 = advertise(lan, 2, "s2", env, "--auth", *responder)

    table = browser.expect(has("s1", "s2"), 10)
    by_name = {s["name"]: s for s in table["servers"]}
    assert by_name["s1"]["address"] == "tcp://198.18.0.1:7001" and by_name["s1"]["capacity"] == 4
    assert by_name["s2"]["address"] == "tcp://198.18.0.2:7002" and by_name["s2"]["auth"] is True
    assert all(s["sources"] == ["mdns"] for s in table["servers"])  # host 3 cannot see their registries

    # The local registry is per network namespace: host 1 lists s1 from it, host 3 nothing.
    assert browse_once(lan, 1, env, 0, "--no-mdns") == ["s1"]
    assert browse_once(lan, 3, env, 0, "--no-mdns") == []

    # A clean stop sends goodbyes: the running browser drops s2 at once.
    t0 = time.monotonic()
    assert s2.stop() == 0
    browser.expect(has("s1"), 3)
    assert time.monotonic() - t0 < 2.0

    # Cut host 1 off: a fresh browser no longer finds s1; the running one keeps the hint.
    lan.link_down(1)
    assert browse_once(lan, 3, env, 1.0) == []
    browser.out.drain()
    assert browser.proc.poll() is None and names(json.loads(browser.out.lines[-1])) == ["s1"]

    # Heal it: a fresh browser finds s1 again, promptly.
    lan.link_up(1)
    assert browse_once(lan, 3, env, 1.0) == ["s1"]
    assert s1.stop() == 0
    browser.expect(has(), 3)
    assert browser.stop() == 0


@RESPONDERS
def test_a_server_that_registered_while_cut_off_reannounces_when_its_link_returns(lan, env, responder):
    browser = Node(lan, 3, ["browse"], env)
    browser.expect(has(), 10)
    lan.link_down(1)
    cut = advertise(lan, 1, "cut", env, *responder)
    cut.expect(lambda e: e["event"] == "announced", 10)  # probes and all announcements went nowhere
    t0 = time.monotonic()
    lan.link_up(1)
    browser.expect(has("cut"), 5)
    assert time.monotonic() - t0 < 2.0
    assert cut.log_has("re-announcing", 2)  # NetWatch saw the link come up

    # The other way round: the browser's host is cut off while a server starts elsewhere.
    lan.link_down(3)
    late = advertise(lan, 2, "late", env, *responder)
    late.expect(lambda e: e["event"] == "announced", 10)
    t0 = time.monotonic()
    lan.link_up(3)
    browser.expect(has("cut", "late"), 5)
    assert time.monotonic() - t0 < 2.0
    assert browser.log_has("querying", 2)  # the browser asked again when its link returned
    for node in (late, cut, browser):
        assert node.stop() == 0


def test_ipv6_a_dual_stack_server_is_found_by_an_ipv6_browser(lan, env):
    server = Node(lan, 1, ["advertise", "six", "::", "7006", "--ip-version", "all", "--no-probe"], env)
    server.expect(lambda e: e["event"] == "registered", 10)
    browser = Node(lan, 3, ["browse", "--ip-version", "v6", "--no-local"], env)  # mDNS over IPv6 only
    (six,) = browser.expect(has("six"), 5)["servers"]
    assert six["port"] == 7006
    v6 = [a for a in six["addresses"] if a.startswith("fe80:")]
    assert v6 and "%" in v6[0]  # link-local, scoped to the interface it came in on
    assert "198.18.0.1" in six["addresses"] and six["host"] == "198.18.0.1"  # a routable IPv4 address first
    assert server.stop() == 0 and browser.stop() == 0
    assert not [line for line in server.err.drain() + browser.err.drain() if "unreachable" in line]  # no ::1


ASK = """
import socket, sys
from discovery._probe import is_answer, ptr_query
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(1.0)
sock.sendto(ptr_query(sys.argv[1], 77), (sys.argv[2], 5353))
try:
    print(is_answer(sock.recv(9000), 77))
except TimeoutError:
    print(False)
"""


def ask(lan: VirtualLan, host: int, env: dict[str, str], to: str) -> bool:
    """A unicast PTR query from ``host`` to ``to``:5353; whether an answer came within 1 s."""
    out = lan.run(host, [sys.executable, "-c", ASK, env["MESH_SERVICE_TYPE"], to], capture_output=True, text=True,
                  env=env, cwd=ROOT, timeout=10)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip() == "True"


def test_the_plain_responder_of_a_loopback_server_answers_nobody_on_the_lan(lan, env):
    local = Node(lan, 1, ["advertise", "lo-only", "127.0.0.1", "7011", "--no-probe", "--no-local"], env)
    local.expect(lambda e: e["event"] == "registered", 10)
    assert ask(lan, 1, env, "127.0.0.1")  # its own host asks on loopback: answered
    assert not ask(lan, 3, env, lan.host_ip(1))  # another host, to its LAN address: dropped
    assert browse_once(lan, 3, env, 1.0) == []
    assert local.stop() == 0
    lan_wide = advertise(lan, 1, "wide", env, "--no-probe", "--no-local")  # bound to the LAN address
    assert ask(lan, 3, env, lan.host_ip(1))
    assert lan_wide.stop() == 0


def test_the_plain_responder_of_a_wildcard_server_answers_on_every_interface(lan, env):
    wild = Node(lan, 1, ["advertise", "wild", "0.0.0.0", "7012", "--no-probe", "--no-local"], env)
    wild.expect(lambda e: e["event"] == "registered", 10)
    assert ask(lan, 1, env, "127.0.0.1") and ask(lan, 3, env, lan.host_ip(1))
    out = lan.run(3, [sys.executable, "-m", "discovery", "browse", "--json", "--once", "--timeout", "1.0"],
                  capture_output=True, text=True, env=env, cwd=ROOT, timeout=15)
    (found,) = json.loads(out.stdout)["servers"]
    assert found["address"] == f"tcp://{lan.host_ip(1)}:7012" and "127.0.0.1" in found["addresses"]
    assert wild.stop() == 0
