"""Discovery: records and addresses, the local registry, static peers, merging, and mDNS/Redis on loopback.

Tests that open sockets skip unless this is an isolated network namespace (only ``lo``):
run them with ``/work/shared/tools/isolated .venv/bin/python -m pytest tests/test_discovery.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import wait_until, free_port
from vlan import in_isolated_netns

import discovery
from discovery import SERVICE_TYPE, Advertiser, Browser, ServerRecord, parse_address
from discovery._local import LocalRegistry, default_registry_dir, process_start_time
from discovery._mdns import txt_properties
from discovery._merge import merge
from discovery._net import pick_host

pytestmark = pytest.mark.timeout(30)

needs_netns = pytest.mark.skipif(
    not in_isolated_netns(),
    reason="opens sockets and multicasts: run inside an isolated network namespace (/work/shared/tools/isolated)",
)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def service_type() -> str:
    return f"_dt{uuid.uuid4().hex[:8]}._tcp.local."


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    return tmp_path / "registry"


@pytest.fixture
def no_thread_left():
    """Every thread started during the test has ended by its end (close() joins, so no waiting)."""
    before = set(threading.enumerate())
    yield
    left = [t.name for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not left, f"threads left running: {left}"


def rec(name="s", host="127.0.0.1", port=5000, sources=("local",), **kw) -> ServerRecord:
    kw.setdefault("addresses", (host,))
    return ServerRecord(name=name, host=host, port=port, sources=frozenset(sources), **kw)


# --- the public surface -------------------------------------------------------------------------

def test_facade_exports_exactly_the_public_api():
    public = sorted(n for n in vars(discovery) if not n.startswith("_"))
    assert sorted(discovery.__all__) == public == sorted(
        ["SERVICE_TYPE", "Advertiser", "Browser", "ServerRecord", "parse_address"]
    )
    assert SERVICE_TYPE == "_agentmesh._tcp.local."


def test_import_pulls_in_neither_mesh_nor_transport_nor_redis():
    code = (
        "import discovery, sys; "
        "bad = [m for m in ('mesh', 'transport', 'redis') if m in sys.modules]; "
        "assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr


# --- addresses and records ----------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("tcp://10.0.0.5:5555", ("10.0.0.5", 5555)),
    ("10.0.0.5:5555", ("10.0.0.5", 5555)),
    (" host-a.example:1 ", ("host-a.example", 1)),
    ("[::1]:65535", ("::1", 65535)),
    ("tcp://[fe80::1%eth0]:7", ("fe80::1%eth0", 7)),
    ("TCP://localhost:80", ("localhost", 80)),
])
def test_parse_address_accepts(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize(("text", "default", "expected"), [
    ("myhost", 4000, ("myhost", 4000)),
    ("[::1]", 4000, ("::1", 4000)),
    ("::1", 4000, ("::1", 4000)),
    ("myhost:5", 4000, ("myhost", 5)),
])
def test_parse_address_default_port(text, default, expected):
    assert parse_address(text, default_port=default) == expected


@pytest.mark.parametrize(("text", "why"), [
    ("myhost", "no port"),
    ("myhost:", "not a number"),
    ("myhost:abc", "not a number"),
    ("myhost:0", "1..65535"),
    ("myhost:65536", "1..65535"),
    (":5555", "no host"),
    ("udp://h:5", "scheme"),
    ("*:5555", "wildcard"),
    ("::1:5555", "[addr]:port"),
    ("[::1:5555", "missing ']'"),
    ("[10.0.0.1]:5", "not an IPv6"),
    ("[::1]x", "unexpected"),
    ("tcp://h:5/path", "'/'"),
    ("bad host:5", "not a host name"),
    ("", "empty"),
    ("  ", "empty"),
])
def test_parse_address_rejects_with_a_clear_message(text, why):
    with pytest.raises(ValueError) as err:
        parse_address(text)
    assert repr(text) in str(err.value) and why in str(err.value)


def test_record_address_and_defaults():
    r = ServerRecord("a", "10.1.2.3", 7)
    assert r.address == "tcp://10.1.2.3:7"
    assert (r.capacity, r.auth, r.py, r.proto, r.pid, r.addresses, r.sources) == (0, False, "", 1, 0, (), frozenset())
    assert ServerRecord("b", "::1", 8).address == "tcp://[::1]:8"
    assert ServerRecord("c", "fe80::1%eth0", 9).address == "tcp://[fe80::1%eth0]:9"
    assert ServerRecord("d", "node-3.lan", 10).address == "tcp://node-3.lan:10"
    with pytest.raises(AttributeError):
        r.port = 8  # type: ignore[misc]


def test_service_type_comes_from_the_environment_when_not_given(monkeypatch):
    monkeypatch.setenv("MESH_SERVICE_TYPE", "_other._tcp.local.")
    assert Browser(mdns=False, local=False, static_peers=[]).service_type == "_other._tcp.local."
    explicit = Browser(mdns=False, local=False, static_peers=[], service_type="_x._tcp.local")
    assert explicit.service_type == "_x._tcp.local."  # the trailing dot is added
    monkeypatch.delenv("MESH_SERVICE_TYPE")
    assert Browser(mdns=False, local=False, static_peers=[]).service_type == SERVICE_TYPE
    with pytest.raises(ValueError, match="service type"):
        Browser(mdns=False, local=False, static_peers=[], service_type="agentmesh")


def test_txt_record_is_small_and_carries_no_endpoint():
    props = txt_properties(rec("n" * 63, "198.18.0.1", 5000, capacity=32, auth=True, py="3.11", pid=123456))
    assert set(props) == {"txtvers", "proto", "name", "cap", "auth", "py", "pid"}
    assert props["auth"] == "1" and props["txtvers"] == "1"
    assert sum(len(k) + len(v) + 2 for k, v in props.items()) < 200  # RFC 6763 §6.2: typical size
    assert "198.18.0.1" not in json.dumps(props) and "5000" not in json.dumps(props)


def test_pick_host_prefers_a_shared_network_then_routable_then_loopback():
    assert pick_host(["127.0.0.1", "203.0.113.9"]) == "203.0.113.9"
    assert pick_host(["fe80::1%2", "127.0.0.1"]) == "fe80::1%2"
    assert pick_host(["::1", "127.0.0.1"]) == "127.0.0.1"
    assert pick_host(["2001:db8::1", "203.0.113.9"]) == "203.0.113.9"
    assert pick_host(["2001:db8::1", "203.0.113.9"], prefer_v6=True) == "2001:db8::1"
    with pytest.raises(ValueError):
        pick_host([])


# --- the local registry -------------------------------------------------------------------------

def test_local_registry_round_trip_with_safe_permissions(registry):
    reg = LocalRegistry(registry)
    mine = rec("srv/../x", "127.0.0.1", 5001, capacity=3, auth=True, py="3.11", pid=os.getpid())
    path = reg.publish(mine)
    assert path.parent == registry  # the name cannot escape the directory
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(registry.stat().st_mode) == 0o700
    assert [p.name for p in registry.iterdir()] == [path.name]  # no temporary file left behind
    (found,) = reg.records()
    assert found == rec("srv/../x", "127.0.0.1", 5001, capacity=3, auth=True, py="3.11", pid=os.getpid())
    reg.withdraw(path)
    reg.withdraw(path)  # missing is fine
    assert reg.records() == []


def test_default_registry_dir_is_per_user_and_per_network_namespace(monkeypatch, tmp_path):
    monkeypatch.delenv("MESH_REGISTRY_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    netns = os.stat("/proc/self/ns/net").st_ino
    expected = tmp_path / f"zmq-agent-mesh-{os.getuid()}" / "servers" / str(netns)
    assert default_registry_dir() == expected
    reg = LocalRegistry()
    path = reg.publish(rec(pid=os.getpid()))
    assert path.parent == expected
    for created in (expected, expected.parent, expected.parent.parent):
        assert stat.S_IMODE(created.stat().st_mode) == 0o700, created
    reg.withdraw(path)
    assert not expected.exists()  # an empty per-namespace directory is not left behind
    assert expected.parent.exists()
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert str(default_registry_dir()).startswith(f"/tmp/zmq-agent-mesh-{os.getuid()}/servers/")


def test_registry_root_owned_by_someone_else_is_refused(monkeypatch, tmp_path, caplog):
    if os.getuid() != 0:
        pytest.skip("needs root to give a directory away")
    monkeypatch.delenv("MESH_REGISTRY_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    root = tmp_path / f"zmq-agent-mesh-{os.getuid()}"
    root.mkdir(mode=0o777)
    os.chown(root, 4321, 4321)
    adv = Advertiser("x", "127.0.0.1", 5002, mdns=False)
    with caplog.at_level(logging.WARNING, logger="discovery"):
        adv.start()  # logged, not raised
    adv.close()
    assert "refusing" in caplog.text
    assert not any(root.rglob("*.json"))


def test_entries_of_dead_processes_are_dropped_and_deleted(registry):
    reg = LocalRegistry(registry)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(10)
    path = reg.publish(rec("dead", pid=gone.pid))
    # a published entry is that of the *writer*; rewrite it with the dead pid
    data = json.loads(path.read_text())
    data.update(pid=gone.pid, start=0)
    path.write_text(json.dumps(data))
    assert reg.records() == []
    assert not path.exists()


def test_zombies_and_reused_pids_count_as_dead(registry):
    reg = LocalRegistry(registry)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        path = reg.publish(rec("zombie"))
        data = json.loads(path.read_text())
        data.update(pid=child.pid, start=process_start_time(child.pid))
        path.write_text(json.dumps(data))
        assert [r.name for r in reg.records()] == ["zombie"]
        child.kill()  # not reaped: a zombie once the signal lands
        wait_until(lambda: reg.records() == [], timeout=10)
        assert not path.exists()
    finally:
        child.kill()
        child.wait(10)
    path = reg.publish(rec("reused"))
    data = json.loads(path.read_text())
    data["start"] += 1  # same pid, another process
    path.write_text(json.dumps(data))
    assert reg.records() == []


@pytest.mark.parametrize("content", [
    b"", b"{", b"[]", b"\xff\xfe", b'{"host": "127.0.0.1"}', b'{"host": 5, "port": 1, "pid": 1}',
    b'{"host": "127.0.0.1", "port": "80", "pid": 1}', b'{"host": "127.0.0.1", "port": 80}',
    b'{"host": "127.0.0.1", "port": 80, "pid": 1, "cap": "many"}', b'{"host": "no such:host", "port": 1, "pid": 1}',
    b'{"host": "127.0.0.1", "port": 80, "pid": 1, "addrs": [1]}', b"x" * 100_000,
])
def test_malformed_entries_are_ignored_not_fatal(registry, content, caplog):
    reg = LocalRegistry(registry)
    good = reg.publish(rec("good", pid=os.getpid()))
    bad = registry / "bad.json"
    bad.write_bytes(content)
    (registry / "subdir.json").mkdir()
    (registry / ".hidden.json").write_bytes(b"{")
    with caplog.at_level(logging.DEBUG, logger="discovery"):
        assert [r.name for r in reg.records()] == ["good"]
    assert bad.exists() and good.exists()  # malformed is not stale: left for a human to look at
    assert "malformed" in caplog.text


def test_a_missing_registry_directory_is_empty(tmp_path):
    assert LocalRegistry(tmp_path / "nope").records() == []


def test_local_only_discovery_needs_no_network(registry, no_thread_left):
    with Advertiser("solo", "127.0.0.1", 5003, capacity=7, auth=True, mdns=False, registry_dir=registry) as adv:
        browser = Browser(mdns=False, static_peers=[], registry_dir=registry)
        t0 = time.monotonic()
        found = browser.wait(5)
        assert time.monotonic() - t0 < 0.5  # immediate: the file is there
        (r,) = found
        assert (r.name, r.address, r.capacity, r.auth, r.pid, r.sources) == (
            "solo", "tcp://127.0.0.1:5003", 7, True, os.getpid(), frozenset({"local"}))
        assert r.py == f"{sys.version_info.major}.{sys.version_info.minor}"
        adv.close()
        adv.close()  # idempotent
        assert browser.servers() == []
        browser.close()
        browser.close()
    with pytest.raises(RuntimeError):
        adv.start()


def test_wait_honours_the_predicate_and_the_timeout(registry):
    browser = Browser(mdns=False, static_peers=["10.9.9.9:1"], registry_dir=registry)
    assert [r.name for r in browser.wait(5)] == ["10.9.9.9:1"]  # default predicate: any server
    t0 = time.monotonic()
    assert len(browser.wait(0.3, lambda found: len(found) >= 2)) == 1
    assert 0.25 <= time.monotonic() - t0 < 2
    done = threading.Event()

    def late() -> None:
        done.wait(5)
        adv = Advertiser("late", "127.0.0.1", 5004, mdns=False, registry_dir=registry)
        adv.start()
        done.adv = adv  # type: ignore[attr-defined]

    th = threading.Thread(target=late)
    th.start()
    t0 = time.monotonic()
    done.set()
    found = browser.wait(5, lambda found: len(found) >= 2)
    th.join()
    done.adv.close()  # type: ignore[attr-defined]
    assert len(found) == 2 and time.monotonic() - t0 < 1
    browser.close()


# --- static peers, merging ----------------------------------------------------------------------

def test_static_peers_from_the_environment(monkeypatch):
    monkeypatch.setenv("MESH_PEERS", "10.0.0.1:5000, tcp://10.0.0.2:5001,[::1]:5002,10.0.0.1:5000")
    found = Browser(mdns=False, local=False).servers()
    assert [(r.name, r.address, r.sources) for r in found] == [
        ("10.0.0.1:5000", "tcp://10.0.0.1:5000", frozenset({"static"})),
        ("10.0.0.2:5001", "tcp://10.0.0.2:5001", frozenset({"static"})),
        ("[::1]:5002", "tcp://[::1]:5002", frozenset({"static"})),
    ]
    assert Browser(mdns=False, local=False, static_peers=[]).servers() == []  # explicit beats env


def test_bad_static_peers_are_named_at_construction(monkeypatch):
    with pytest.raises(ValueError, match=r"'nonsense'.*static_peers"):
        Browser(mdns=False, static_peers=["10.0.0.1:5000", "nonsense"])
    with pytest.raises(ValueError, match="not one string"):
        Browser(mdns=False, static_peers="10.0.0.1:5000")  # type: ignore[arg-type]
    monkeypatch.setenv("MESH_PEERS", "10.0.0.1:99999")
    with pytest.raises(ValueError, match=r"'10.0.0.1:99999' in MESH_PEERS"):
        Browser(mdns=False)


def test_merge_one_record_per_server_with_sources_united():
    pid = 77
    local = rec("srv", "127.0.0.1", 6000, ("local",), capacity=4, pid=pid, addresses=("127.0.0.1", "198.18.0.1"))
    mdns = rec("srv", "198.18.0.1", 6000, ("mdns",), capacity=4, pid=pid, addresses=("198.18.0.1", "127.0.0.1"))
    static = rec("198.18.0.1:6000", "198.18.0.1", 6000, ("static",))
    other = rec("far", "198.18.0.2", 6000, ("mdns",), addresses=("198.18.0.2", "127.0.0.1"))
    other_port = rec("srv2", "127.0.0.1", 6001, ("local",))
    merged = merge([static, other, mdns, local, other_port])
    assert [(r.name, r.host, r.port, sorted(r.sources)) for r in merged] == [
        ("far", "198.18.0.2", 6000, ["mdns"]),  # shares only 127.0.0.1 with srv: another host
        ("srv", "127.0.0.1", 6000, ["local", "mdns", "static"]),  # the local entry's host wins
        ("srv2", "127.0.0.1", 6001, ["local"]),
    ]
    assert merged[1].capacity == 4 and merged[1].pid == pid
    assert set(merged[1].addresses) == {"127.0.0.1", "198.18.0.1"}


def test_merge_prefers_described_fields_over_static_and_dedups_by_host_and_port():
    static = rec("10.0.0.9:7000", "10.0.0.9", 7000, ("static",))
    redis = rec("worker", "10.0.0.9", 7000, ("redis",), capacity=9)
    (m,) = merge([static, redis, static])
    assert (m.name, m.capacity, m.sources) == ("worker", 9, frozenset({"static", "redis"}))
    (m,) = merge([rec("a", "localhost", 1, ("static",)), rec("b", "127.0.0.1", 1, ("local",))])
    assert (m.name, m.host) == ("b", "127.0.0.1")


# --- the advertiser's arguments -----------------------------------------------------------------

def test_advertiser_validates_its_arguments():
    with pytest.raises(ValueError, match="63 bytes"):
        Advertiser("é" * 32, "127.0.0.1", 1, mdns=False, local=False)
    with pytest.raises(ValueError, match="port"):
        Advertiser("a", "127.0.0.1", 0, mdns=False, local=False)
    with pytest.raises(ValueError, match="ip_version"):
        Advertiser("a", "127.0.0.1", 1, ip_version="v5", mdns=False, local=False)
    with pytest.raises(ValueError, match="ip_version"):
        Browser(ip_version="ipv4", mdns=False)
    auto = Advertiser("", "127.0.0.1", 4444, mdns=False, local=False)
    assert auto.name.endswith(f"-{os.getpid()}-4444")


def test_a_wildcard_server_is_loopback_locally_and_routable_elsewhere():
    adv = Advertiser("wild", "0.0.0.0", 5005, mdns=False, local=False, interfaces=["127.0.0.1"])
    assert adv.record.addresses == ("127.0.0.1",)
    adv = Advertiser("wild", "0.0.0.0", 5005, mdns=False, local=False)
    assert "127.0.0.1" in adv.record.addresses
    assert adv._local_record.host == "127.0.0.1"


def test_missing_redis_package_gives_a_clear_error(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ImportError, match=r"pip install 'zmq-agent-mesh\[redis\]'"):
        Advertiser("a", "127.0.0.1", 1, mdns=False, local=False, redis_url="redis://127.0.0.1:1")
    with pytest.raises(ImportError, match="redis"):
        Browser(mdns=False, redis_url="redis://127.0.0.1:1")
    monkeypatch.setenv("MESH_REDIS_DISCOVERY_URL", "redis://127.0.0.1:1")
    with caplog.at_level(logging.ERROR, logger="discovery"):
        Browser(mdns=False, local=False).servers()  # from the environment: logged, skipped
    assert "MESH_REDIS_DISCOVERY_URL" in caplog.text


# --- mDNS on loopback ---------------------------------------------------------------------------

@needs_netns
def test_mdns_alone_finds_a_server_and_drops_it_on_goodbye(service_type, no_thread_left):
    browser = Browser(local=False, static_peers=[], service_type=service_type)
    browser.start()
    browser.start()  # idempotent
    adv = Advertiser("mdns-only", "127.0.0.1", 5100, capacity=5, auth=True, local=False, service_type=service_type)
    try:
        adv.start()
        (r,) = browser.wait(10)
        assert (r.name, r.address, r.capacity, r.auth, r.py, r.proto, r.pid) == (
            "mdns-only", "tcp://127.0.0.1:5100", 5, True, f"{sys.version_info.major}.{sys.version_info.minor}", 1,
            os.getpid())
        assert r.sources == frozenset({"mdns"}) and r.addresses == ("127.0.0.1",)
        assert adv.wait_registered(5)
        t0 = time.monotonic()
        adv.close()
        assert browser.wait(5, lambda found: not found) == []
        assert time.monotonic() - t0 < 1.0  # the goodbye removes it at once, no TTL wait
    finally:
        adv.close()
        browser.close()
        browser.close()


@needs_netns
def test_cold_browsers_find_a_registered_server_at_once_even_one_after_another(service_type, no_thread_left):
    # Each new browser's one-shot query is answered by unicast to its own port. Without it, a
    # browser started within a second of another waited ~1.1 s: the responder ignores a repeated
    # query for 0.8 s, and a unicast answer to port 5353 reaches one process of those sharing it.
    with (
        Advertiser("cold", "127.0.0.1", 5101, local=False, service_type=service_type) as adv,
        Browser(local=False, static_peers=[], service_type=service_type) as running,
    ):
        assert adv.wait_announced(5) and [r.name for r in running.wait(5)] == ["cold"]
        for _ in range(3):
            with Browser(local=False, static_peers=[], service_type=service_type) as browser:
                t0 = time.monotonic()
                assert [r.name for r in browser.wait(5)] == ["cold"]
                elapsed = time.monotonic() - t0
            assert elapsed < 0.5, elapsed  # typically ~5 ms


@needs_netns
def test_mdns_and_local_merge_into_one_record(service_type, registry, no_thread_left):
    with (
        Advertiser("both", "127.0.0.1", 5102, service_type=service_type, registry_dir=registry, probe=False),
        Browser(static_peers=[], service_type=service_type, registry_dir=registry) as browser,
    ):
        found = browser.wait(5, lambda found: any(r.sources == {"mdns", "local"} for r in found))
    assert [(r.name, r.address, sorted(r.sources)) for r in found] == [
        ("both", "tcp://127.0.0.1:5102", ["local", "mdns"])]


@needs_netns
def test_close_right_after_start_leaves_nothing_behind(service_type, no_thread_left):
    with Browser(local=False, static_peers=[], service_type=service_type) as browser:
        adv = Advertiser("brief", "127.0.0.1", 5103, local=False, service_type=service_type)
        adv.start()
        t0 = time.monotonic()
        adv.close()  # cancels the probing: nothing was announced, nothing to withdraw
        assert time.monotonic() - t0 < 1.0
        assert browser.wait(1.5) == []


@needs_netns
def test_a_duplicate_name_is_renamed_not_lost(service_type, no_thread_left):
    with Advertiser("twin", "127.0.0.1", 5104, local=False, service_type=service_type) as first:
        assert first.wait_registered(5)
        with Advertiser("twin", "127.0.0.1", 5105, local=False, service_type=service_type) as second:
            assert second.wait_registered(10)
            assert second.mdns_name != first.mdns_name
            with Browser(local=False, static_peers=[], service_type=service_type) as browser:
                found = browser.wait(5, lambda found: len(found) == 2)
    assert sorted(r.port for r in found) == [5104, 5105] and {r.name for r in found} == {"twin"}


@needs_netns
def test_without_multicast_the_other_sources_still_work(monkeypatch, service_type, registry, caplog, no_thread_left):
    import discovery._mdns as mdns_mod

    def no_multicast(*args, **kwargs):
        raise OSError(19, "No such device")

    monkeypatch.setattr(mdns_mod, "Zeroconf", no_multicast)
    with (
        caplog.at_level(logging.WARNING, logger="discovery"),
        Advertiser("nomc", "127.0.0.1", 5106, service_type=service_type, registry_dir=registry) as adv,
        Browser(static_peers=[], service_type=service_type, registry_dir=registry) as browser,
    ):
        assert not adv.wait_registered(1)
        assert [(r.name, r.sources) for r in browser.wait(5)] == [("nomc", frozenset({"local"}))]
    assert "mDNS advertising" in caplog.text and "mDNS browsing" in caplog.text


@needs_netns
def test_works_from_inside_a_running_event_loop(service_type, no_thread_left):
    async def main() -> list[ServerRecord]:
        with (
            Advertiser("aio", "127.0.0.1", 5107, local=False, service_type=service_type, probe=False),
            Browser(local=False, static_peers=[], service_type=service_type) as browser,
        ):
            return await asyncio.to_thread(browser.wait, 5)

    assert [r.name for r in asyncio.run(main())] == ["aio"]


# --- Redis --------------------------------------------------------------------------------------


def _start_redis(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2)
    deadline = time.monotonic() + 10
    while True:
        try:
            if client.ping():
                client.close()
                return proc
        except redis.RedisError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.02)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@needs_netns
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_redis_registry_survives_an_outage(caplog, no_thread_left):
    pytest.importorskip("redis")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    prefix = f"test:{uuid.uuid4().hex[:6]}:"
    server = _start_redis(port)
    adv = browser = None
    try:
        adv = Advertiser("viaredis", "0.0.0.0", 5200, capacity=2, mdns=False, local=False, redis_url=url,
                         redis_ttl=1.5, redis_prefix=prefix)
        adv.start()
        browser = Browser(mdns=False, local=False, static_peers=[], redis_url=url, redis_prefix=prefix)
        (r,) = browser.wait(5)
        assert (r.name, r.port, r.capacity, r.sources) == ("viaredis", 5200, 2, frozenset({"redis"}))
        _stop(server)
        with caplog.at_level(logging.WARNING, logger="discovery"):
            assert browser.wait(3, lambda found: not found) == []  # no exception, just empty
        assert "Redis unavailable" in caplog.text
        server = _start_redis(port)  # empty: the advertiser's refresh writes the key again
        assert [r.name for r in browser.wait(10)] == ["viaredis"]
        adv.close()
        assert browser.wait(5, lambda found: not found) == []
    finally:
        if adv is not None:
            adv.close()
        if browser is not None:
            browser.close()
        _stop(server)
