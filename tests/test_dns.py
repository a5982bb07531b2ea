"""Peers from DNS (issue 17, point 6): ``MESH_PEERS=dns:NAME[:PORT]`` and ``dns+srv:NAME``.

The names resolve inside the test's network namespace: ``localhost`` through the system
resolver (``/etc/hosts``), and every other name through a small DNS server this test runs on
127.0.0.1 (its answers are made with dnspython's message module, sent over real UDP) that the
source is pointed at with ``MESH_DNS_NAMESERVER``, as an operator would point it at a Consul
agent. Three servers on 127.0.0.1-3 behind one name stand for a StatefulSet's pods.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading

import pytest

pytest.importorskip("dns")
import dns.flags  # noqa: E402
import dns.message  # noqa: E402
import dns.rcode  # noqa: E402
import dns.rdatatype  # noqa: E402
import dns.rrset  # noqa: E402
from hypothesis import given, settings, strategies as st  # noqa: E402

import mesh  # noqa: E402
from discovery import Browser  # noqa: E402
from discovery import _dns  # noqa: E402
from discovery._dns import DnsSource, split_dns_entries  # noqa: E402

from conftest import wait_until, free_port  # noqa: E402


class TinyDns:
    """A DNS server on 127.0.0.1 (UDP) answering from a table {(name, type): [rdata text]}."""

    def __init__(self, zone: dict[tuple[str, str], list[str]], glue: dict[str, list[str]] | None = None) -> None:
        self.zone = {(n.lower().rstrip(".") + ".", t): v for (n, t), v in zone.items()}
        self.glue = glue or {}  # SRV name -> targets whose A records go in the additional section
        self.queries: list[tuple[str, str]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.05)  # a closed socket does not wake recvfrom: the loop checks a flag
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            query = dns.message.from_wire(data)
            question = query.question[0]
            name, rdtype = str(question.name).lower(), dns.rdatatype.to_text(question.rdtype)
            self.queries.append((name, rdtype))
            response = dns.message.make_response(query)
            response.flags |= dns.flags.AA
            values = self.zone.get((name, rdtype))
            if values:
                response.answer.append(dns.rrset.from_text_list(name, 5, "IN", rdtype, values))
                for target in self.glue.get(name, []):
                    key = (target.lower().rstrip(".") + ".", "A")
                    response.additional.append(dns.rrset.from_text_list(key[0], 5, "IN", "A", self.zone[key]))
            elif not any(n == name for n, _ in self.zone):
                response.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(response.to_wire(), peer)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def tiny_dns(monkeypatch):
    made: list[TinyDns] = []

    def make(zone, glue=None) -> TinyDns:
        server = TinyDns(zone, glue)
        made.append(server)
        monkeypatch.setenv("MESH_DNS_NAMESERVER", f"127.0.0.1:{server.port}")
        return server

    yield make
    for server in made:
        server.close()


def _pods(port: int, n: int = 3) -> list[mesh.AgentServer]:
    """``n`` servers on 127.0.0.1..n, all on ``port`` (the pods of a StatefulSet)."""
    return [mesh.AgentServer(host=f"127.0.0.{i + 1}", port=port, capacity=2, advertise=False, name=f"mesh-{i}")
            .launch(in_subprocess=False) for i in range(n)]


def test_a_name_with_many_addresses_is_many_servers(tiny_dns, monkeypatch):
    port = free_port()
    pods = _pods(port)
    try:
        tiny_dns({("mesh.test", "A"): ["127.0.0.1", "127.0.0.2", "127.0.0.3"]})
        monkeypatch.setenv("MESH_PEERS", f"dns:mesh.test:{port}")
        found = wait_until(lambda: sorted(s.name for s in mesh.servers(timeout=0.3)) == ["mesh-0", "mesh-1", "mesh-2"],
                           timeout=15)
        assert found
        addresses = {s.address for s in mesh.servers(timeout=0.3)}
        assert addresses == {f"tcp://127.0.0.{i}:{port}" for i in (1, 2, 3)}
    finally:
        for pod in pods:
            pod.shutdown()


def test_srv_records_give_each_target_and_its_port(tiny_dns, monkeypatch):
    pods = [mesh.AgentServer(port=0, capacity=2, advertise=False, name=f"srv-{i}").launch(in_subprocess=False)
            for i in range(3)]
    try:
        zone = {
            ("_mesh._tcp.mesh.test", "SRV"): [f"0 10 {p.port} mesh-{i}.mesh.test." for i, p in enumerate(pods)],
            **{(f"mesh-{i}.mesh.test", "A"): ["127.0.0.1"] for i in range(3)},
        }
        # two targets' addresses come with the answer, the third is asked for
        server = tiny_dns(zone, glue={"_mesh._tcp.mesh.test.": ["mesh-0.mesh.test", "mesh-1.mesh.test"]})
        with Browser(mdns=False, local=False, static_peers=["dns+srv:_mesh._tcp.mesh.test"]) as browser:
            records = browser.servers()
        assert {(r.host, r.port) for r in records} == {("127.0.0.1", p.port) for p in pods}
        assert all(r.sources == frozenset({"dns"}) for r in records)
        assert ("mesh-2.mesh.test.", "A") in server.queries and ("mesh-0.mesh.test.", "A") not in server.queries
        monkeypatch.setenv("MESH_PEERS", "dns+srv:_mesh._tcp.mesh.test")
        assert wait_until(lambda: sorted(s.name for s in mesh.servers(timeout=0.3)) == ["srv-0", "srv-1", "srv-2"],
                          timeout=15)
    finally:
        for pod in pods:
            pod.shutdown()


def test_the_name_is_looked_up_again_as_pods_come_and_go(tiny_dns, monkeypatch):
    server = tiny_dns({("mesh.test", "A"): ["127.0.0.1"]})
    monkeypatch.setattr(_dns, "REFRESH", 0.0)
    source = DnsSource("dns:mesh.test:7000")
    assert [r.address for r in source.records()] == ["tcp://127.0.0.1:7000"]
    server.zone[("mesh.test.", "A")] = ["127.0.0.1", "127.0.0.2"]
    assert [r.address for r in source.records()] == ["tcp://127.0.0.1:7000", "tcp://127.0.0.2:7000"]
    del server.zone[("mesh.test.", "A")]  # NXDOMAIN: no pods now
    assert source.records() == []


def test_a_failing_lookup_keeps_the_last_answer_and_never_raises(monkeypatch, caplog):
    monkeypatch.setattr(_dns, "REFRESH", 0.0)
    answers: list = [[("10.0.0.7", 12001)], OSError("server failure"), OSError("server failure")]

    def resolve(kind, name, port):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    source = DnsSource("dns:pods.example", resolve=resolve)
    assert [r.address for r in source.records()] == ["tcp://10.0.0.7:12001"]  # the default port
    with caplog.at_level(logging.WARNING, logger="discovery"):
        assert [r.address for r in source.records()] == ["tcp://10.0.0.7:12001"]
        monkeypatch.setattr(_dns, "STALE", 0.0)
        assert source.records() == []
    assert sum("lookup failed" in r.getMessage() for r in caplog.records) == 1  # once, not per refresh


def test_the_system_resolver_serves_plain_dns_entries(server, monkeypatch):
    monkeypatch.delenv("MESH_DNS_NAMESERVER", raising=False)
    source = DnsSource(f"dns:localhost:{server.port}")
    assert f"tcp://127.0.0.1:{server.port}" in [r.address for r in source.records()]
    monkeypatch.setenv("MESH_PEERS", f"dns:localhost:{server.port}")
    assert server.address in [s.address for s in mesh.servers(timeout=0.3)]


def test_entries_mix_and_bad_ones_are_named():
    plain, sources = split_dns_entries(["10.0.0.1:5000", "dns:a.example:1", "DNS+SRV:_x._tcp.b.example"])
    assert plain == ["10.0.0.1:5000"] and [(s.kind, s.name, s.port) for s in sources] == [
        ("a", "a.example", 1), ("srv", "_x._tcp.b.example", 0)]
    for bad in ("dns:", "dns:a.example:99999", "dns:bad name", "dns+srv:", "dns:a:b:c"):
        with pytest.raises(ValueError, match="MESH_PEERS"):
            split_dns_entries([bad], "MESH_PEERS")
    with pytest.raises(ValueError, match="one string"):
        Browser(mdns=False, static_peers="dns:a.example")  # type: ignore[arg-type]


def test_without_dnspython_srv_entries_say_what_to_install():
    code = (
        "import sys; sys.modules['dns'] = None\n"
        "from discovery._dns import DnsSource\n"
        "s = DnsSource('dns+srv:_mesh._tcp.x.example')\n"
        "try:\n    s._resolve('srv', s.name, 0)\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert "zmq-agent-mesh[dns]" in out.stdout, out.stderr


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_fuzz_entries_parse_or_raise_valueerror(text):
    try:
        split_dns_entries([f"dns:{text}", f"dns+srv:{text}"])
    except ValueError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=40), st.integers(min_value=-5, max_value=70000)), max_size=20))
def test_fuzz_whatever_a_resolver_answers_gives_records_or_nothing(answer):
    source = DnsSource("dns:x.example", resolve=lambda kind, name, port: answer)
    for rec in source.records():
        assert 0 < rec.port < 65536 and rec.sources == frozenset({"dns"})
