"""The plain mDNS responder (discovery._responder): what it sends, what it answers, what it drops,
and that python-zeroconf browsers (ours and zeroconf's own) find it and see its goodbye."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from vlan import in_isolated_netns

from discovery import Advertiser, Browser
from discovery._mdns_wire import PTR, SRV, TXT, A, Writer, parse_query
from discovery._probe import is_answer, ptr_query
from discovery._mdns_socket import Bucket as _Bucket
from discovery._responder import MdnsResponder

pytestmark = pytest.mark.timeout(30)
ROOT = Path(__file__).resolve().parent.parent
ST = "_rt._tcp.local."
needs_netns = pytest.mark.skipif(not in_isolated_netns(), reason="multicasts: run inside an isolated namespace")


class FakeIface:
    """What MdnsResponder.answer needs of an interface, recording what it sends."""

    def __init__(self) -> None:
        self.index, self.address = 1, "127.0.0.1"
        self.last_sent: dict[str, float] = {}
        self.unicast = _Bucket(20.0)
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def send(self, packet: bytes, to: tuple[str, int] = ("224.0.0.251", 5353)) -> None:
        self.sent.append((packet, to))


def responder() -> MdnsResponder:
    props = {"txtvers": "1", "proto": "1", "name": "srv-1", "cap": "4", "auth": "0", "py": "3.11", "pid": "42"}
    return MdnsResponder(ST, "srv-1", 6001, props, ["198.18.0.1", "127.0.0.1"], [(1, "127.0.0.1")])


def incoming(packet: bytes):
    from zeroconf import DNSIncoming

    msg = DNSIncoming(packet)
    assert msg.valid
    return msg


def query(name: str = ST, qtype: int = PTR, qid: int = 0, qu: bool = False) -> bytes:
    w = Writer(qid, flags=0)
    w.question(name, qtype)
    data = bytearray(w.bytes())
    if qu:
        data[-2] |= 0x80  # the QU bit of the last question's class
    return bytes(data)


# --- wire: what zeroconf reads ------------------------------------------------------------------

def test_the_announcement_is_what_zeroconf_registers():
    msg = incoming(responder().announcement())
    assert msg.is_response() and msg.flags & 0x0400  # authoritative
    by_type = {}
    for rec in msg.answers():
        by_type.setdefault(rec.type, []).append(rec)
    (ptr,) = by_type[PTR]
    assert (ptr.name, ptr.alias, ptr.ttl) == (ST, f"srv-1.{ST}", 4500)
    (srv,) = by_type[SRV]
    assert (srv.name, srv.port, srv.server, srv.ttl, srv.unique) == (f"srv-1.{ST}", 6001, f"srv-1.{ST}", 120, True)
    (txt,) = by_type[TXT]
    assert b"name=srv-1" in txt.text and b"cap=4" in txt.text
    assert sorted(socket.inet_ntoa(a.address) for a in by_type[A]) == ["127.0.0.1", "198.18.0.1"]


def test_goodbye_has_ttl_zero_for_every_record():
    msg = incoming(responder().goodbye())
    assert len(msg.answers()) == 5 and all(rec.ttl == 0 for rec in msg.answers())


def test_a_legacy_query_gets_a_unicast_reply_with_its_id_question_and_short_ttls():
    r, iface = responder(), FakeIface()
    r.answer(ptr_query(ST, 0x1234), ("127.0.0.1", 40000), iface)
    ((packet, to),) = iface.sent
    assert to == ("127.0.0.1", 40000) and is_answer(packet, 0x1234)  # what discovery._probe accepts
    msg = incoming(packet)
    assert msg.id == 0x1234 and [q.name for q in msg.questions] == [ST]
    assert {rec.type for rec in msg.answers()} == {PTR, SRV, TXT, A}  # PTR answer, the rest additional
    assert all(rec.ttl <= 10 and not rec.unique for rec in msg.answers())


def test_a_multicast_query_is_answered_by_multicast_at_most_once_a_second_per_record_set():
    r, iface = responder(), FakeIface()
    r.answer(query(), ("127.0.0.1", 5353), iface)
    r.answer(query(), ("127.0.0.1", 5353), iface)
    assert [to for _, to in iface.sent] == [("224.0.0.251", 5353)]
    r.answer(query(f"srv-1.{ST}", SRV), ("127.0.0.1", 5353), iface)  # another record set: answered
    assert len(iface.sent) == 2 and [rec.type for rec in incoming(iface.sent[1][0]).answers()][0] == SRV
    iface.last_sent = {k: v - 1.0 for k, v in iface.last_sent.items()}  # a second later
    r.answer(query(), ("127.0.0.1", 5353), iface)
    assert len(iface.sent) == 3


def test_a_qu_question_also_gets_a_unicast_copy_even_when_the_multicast_is_held_back():
    r, iface = responder(), FakeIface()
    r.answer(query(qu=True), ("127.0.0.1", 5353), iface)
    r.answer(query(qu=True), ("127.0.0.1", 5353), iface)
    assert [to for _, to in iface.sent] == [("224.0.0.251", 5353), ("127.0.0.1", 5353), ("127.0.0.1", 5353)]


def test_a_known_answer_suppresses_the_ptr():
    r, iface = responder(), FakeIface()
    w = Writer(0, flags=0)
    w.question(ST, PTR)
    w.record(1, ST, PTR, 4000, f"srv-1.{ST}")
    r.answer(w.bytes(), ("127.0.0.1", 5353), iface)
    assert iface.sent == []
    w = Writer(0, flags=0)  # a known answer about to expire does not suppress
    w.question(ST, PTR)
    w.record(1, ST, PTR, 100, f"srv-1.{ST}")
    r.answer(w.bytes(), ("127.0.0.1", 5353), iface)
    assert len(iface.sent) == 1


def test_questions_for_other_names_responses_and_other_opcodes_get_nothing():
    r, iface = responder(), FakeIface()
    for data in (query("_other._tcp.local."), query(f"srv-2.{ST}", SRV), query(f"srv-1.{ST}", 28),
                 bytes([0, 0, 0x84, 0]) + query()[4:], bytes([0, 0, 0x28, 0]) + query()[4:]):
        r.answer(data, ("127.0.0.1", 40000), iface)
    assert iface.sent == []


def test_dns_sd_service_enumeration_names_the_type():
    r, iface = responder(), FakeIface()
    r.answer(query("_services._dns-sd._udp.local."), ("127.0.0.1", 5353), iface)
    ((packet, _),) = iface.sent
    assert [(rec.name, rec.alias) for rec in incoming(packet).answers()] == [("_services._dns-sd._udp.local.", ST)]


def test_unicast_replies_are_rate_limited():
    r, iface = responder(), FakeIface()
    t0 = time.monotonic()
    for i in range(500):
        r.answer(ptr_query(ST, i + 1), ("127.0.0.1", 40000), iface)
    elapsed = time.monotonic() - t0
    assert 20 <= len(iface.sent) <= 20 + 20 * elapsed + 1


@pytest.mark.parametrize("data", [
    b"", b"\0" * 11, b"\0\0\0\0\0\1\0\0\0\0\0\0",  # a question with no name
    b"\0\0\0\0\0\1\0\0\0\0\0\0\xc0\x0c\0\x0c\0\1",  # a pointer to itself
    b"\0\0\0\0\0\1\0\0\0\0\0\0\x3f" + b"a" * 10,  # a label past the end
    b"\0\0\0\0\0\1\0\0\0\0\0\0" + b"\x3fa" * 5 + b"\0\0\x0c\0\1",  # labels that run into each other
    b"\0\0\0\0\0\1\0\0\0\0\0\0" + (b"\x3f" + b"a" * 63) * 5 + b"\0\0\x0c\0\1",  # a name over 255 bytes
    b"\0\0\0\0\xff\xff\0\0\0\0\0\0",  # too many questions
    b"\0\0\0\0\0\1\0\0\0\0\0\0\x80a\0\0\x0c\0\1",  # a reserved label type
])
def test_malformed_queries_raise_value_error_only(data):
    with pytest.raises(ValueError):
        parse_query(data)


def test_a_compression_pointer_backwards_is_read():
    w = Writer(7, flags=0)
    w.question(ST, PTR)
    w.question(f"srv-1.{ST}", SRV)  # compressed against the first
    q = parse_query(w.bytes())
    assert q is not None and q.id == 7 and q.questions == [(ST, PTR, False), (f"srv-1.{ST}", SRV, False)]


def test_only_datagrams_that_arrived_on_the_interface_count():
    info = struct.pack("=i4s4s", 3, b"\0" * 4, b"\0" * 4)
    assert MdnsResponder._arrived_on([(socket.IPPROTO_IP, 8, info)]) == 3
    assert MdnsResponder._arrived_on([(socket.IPPROTO_IP, 8, info[:4])]) == -1
    assert MdnsResponder._arrived_on([]) == -1


# --- live, on loopback --------------------------------------------------------------------------

@pytest.fixture
def service_type() -> str:
    return f"_dr{os.urandom(4).hex()}._tcp.local."


def test_an_advertiser_that_does_not_probe_imports_neither_zeroconf_nor_asyncio_nor_ifaddr(service_type):
    code = (
        "import sys; from discovery import Advertiser\n"
        f"a = Advertiser('lean', '127.0.0.1', 6100, local=False, probe=False, service_type={service_type!r})\n"
        "a.start(); assert a.wait_registered(5), 'not registered'; a.close()\n"
        "print(sorted(m for m in ('zeroconf', 'asyncio', 'ifaddr', 'ssl') if m in sys.modules))\n"
    )
    cmd = [sys.executable, "-c", code]
    if not in_isolated_netns():
        pytest.skip("multicasts: run inside an isolated namespace")
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=20, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@needs_netns
def test_zeroconfs_own_browser_resolves_it_and_sees_the_goodbye(service_type):
    from zeroconf import ServiceBrowser, ServiceStateChange, Zeroconf

    events: list[tuple[str, ServiceStateChange]] = []
    changed = threading.Condition()

    def handler(zeroconf, service_type, name, state_change):
        with changed:
            events.append((name, state_change))
            changed.notify_all()

    adv = Advertiser("zc-peer", "127.0.0.1", 6101, capacity=7, local=False, probe=False, service_type=service_type)
    zc = Zeroconf(interfaces=["127.0.0.1"])
    try:
        adv.start()
        assert adv.mdns_name == f"zc-peer.{service_type}"
        ServiceBrowser(zc, service_type, handlers=[handler])
        with changed:
            assert changed.wait_for(lambda: events, 10)
        info = zc.get_service_info(service_type, f"zc-peer.{service_type}", timeout=3000)
        assert info is not None and info.port == 6101 and info.parsed_addresses() == ["127.0.0.1"]
        assert info.decoded_properties["cap"] == "7" and info.decoded_properties["name"] == "zc-peer"
        adv.close()
        with changed:
            assert changed.wait_for(lambda: (f"zc-peer.{service_type}", ServiceStateChange.Removed) in events, 5)
    finally:
        adv.close()
        zc.close()


@needs_netns
def test_our_probe_and_browser_find_it_and_it_re_announces_after_a_network_change(service_type):
    adv = Advertiser("plain", "127.0.0.1", 6102, local=False, probe=False, service_type=service_type)
    with adv:
        assert adv.wait_announced(5)
        with Browser(local=False, static_peers=[], service_type=service_type) as browser:
            (r,) = browser.wait(5)
            assert (r.name, r.address, r.sources) == ("plain", "tcp://127.0.0.1:6102", frozenset({"mdns"}))
        sent: list[bytes] = []
        two = threading.Event()
        iface = next(iter(adv._mdns._ifaces.values()))
        real_send = iface.send

        def send(packet, *to):
            sent.append(packet)
            if len(sent) >= 2:
                two.set()
            real_send(packet, *to)

        iface.send = send
        adv._mdns._network_changed()  # what NetWatch calls
        assert two.wait(5) and all(p == adv._mdns.announcement() for p in sent[:2])


@needs_netns
def test_several_responders_on_one_host_and_a_zeroconf_advertiser_beside_them_are_all_found(service_type):
    # `zmq-agent-server start --processes 4` runs one responder per server, all on port 5353
    advs = [Advertiser(f"many-{i}", "127.0.0.1", 6110 + i, local=False, probe=False, service_type=service_type)
            for i in range(3)]
    advs.append(Advertiser("zc", "127.0.0.1", 6119, local=False, service_type=service_type))  # probes: zeroconf
    try:
        for adv in advs:
            adv.start()
        assert advs[-1].wait_registered(10)
        want = ["many-0", "many-1", "many-2", "zc"]
        for _ in range(2):  # a fresh browser each time: its first query is answered by every responder
            with Browser(local=False, static_peers=[], service_type=service_type) as browser:
                found = browser.wait(5, lambda found: len(found) == 4)
            assert sorted(r.name for r in found) == want
    finally:
        for adv in advs:
            adv.close()


@needs_netns
def test_a_network_change_follows_the_interfaces_and_keeps_them_when_the_table_is_unreadable(service_type):
    plans = [None, (["127.0.0.1"], [])]  # unreadable table, then no interface left
    announced = threading.Event()
    r = MdnsResponder(service_type, "follow", 6120, {"name": "follow"}, ["127.0.0.1"], [(1, "127.0.0.1")],
                      current=lambda: plans.pop(0))
    r.start()
    try:
        assert r.announced.wait(5)
        iface = r._ifaces[1]
        real_send = iface.send
        iface.send = lambda packet, *to: (announced.set(), real_send(packet, *to))
        r._network_changed()
        assert announced.wait(5) and list(r._ifaces) == [1]  # kept, and announced again
        announced.clear()
        r._network_changed()
        deadline = time.monotonic() + 5
        while r._ifaces and time.monotonic() < deadline:  # the responder thread applies it
            time.sleep(0.01)
        assert r._ifaces == {}
    finally:
        r.close()
