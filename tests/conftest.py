"""Shared fixtures: isolation checks, a clean mesh per test, servers, and leak checks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
TESTS = os.path.dirname(os.path.abspath(__file__))
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

try:
    from vlan import in_isolated_netns  # noqa: E402
except ImportError:  # pragma: no cover - vlan.py is the shared home of this check

    def in_isolated_netns() -> bool:
        import socket

        return [name for _, name in socket.if_nameindex()] == ["lo"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a test that takes more than ~10 s (still run by CI)")
    if not in_isolated_netns() and os.environ.get("MESH_TESTS_ALLOW_NETWORK") != "1":
        pytest.exit(
            "the tests open sockets and multicast: run them with bin/test "
            "(inside an isolated network namespace)",
            returncode=2,
        )


@pytest.fixture(autouse=True)
def clean_mesh(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with default settings, no discovery, its own registry, and ends with mesh.shutdown()."""
    import mesh
    from mesh._core import settings as _settings

    monkeypatch.setenv("MESH_DISCOVERY", "0")
    monkeypatch.setenv("MESH_REGISTRY_DIR", str(tmp_path_factory.mktemp("registry")))
    monkeypatch.setenv("MESH_SERVICE_TYPE", f"_mt{uuid.uuid4().hex[:8]}._tcp.local.")
    monkeypatch.delenv("MESH_SECRET", raising=False)
    monkeypatch.delenv("MESH_PEERS", raising=False)
    _settings.reset()
    children_before = _children()
    yield
    mesh.shutdown()
    _settings.reset()
    leaked = wait_until(lambda: not (_children() - children_before), timeout=10.0, raise_=False)
    assert leaked, f"test left child processes running: {sorted(_children() - children_before)}"


def _children() -> set[int]:
    me = os.getpid()
    out = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            out.add(int(pid))
    return out


def created(agent: Any) -> Any:
    """``agent`` once its pipelined creation has reached its server (``to_dist()`` returns before):
    what reaches it by name, over HTTP or from another process, finds it. Its first use waits for it."""
    assert agent.name is not None
    return agent


def wait_until(cond: Callable[[], object], timeout: float = 5.0, interval: float = 0.01, raise_: bool = True) -> object:
    """Poll ``cond`` until it is truthy or ``timeout`` passes (then fail, or return False)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            if raise_:
                raise AssertionError(f"condition not met within {timeout} s")
            return False
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for servers whose address a test must know first)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_line(stream, timeout: float = 30.0) -> str:
    """``stream.readline()`` bounded by ``timeout``: a child that never prints fails the test at once."""
    import threading

    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not box:
        raise AssertionError(f"no line from the child within {timeout} s")
    return box[0]


@pytest.fixture
def server() -> Iterator["mesh.AgentServer"]:
    """An agent server in this process on a free loopback port."""
    import mesh

    srv = mesh.AgentServer(port=0, capacity=8, advertise=False).launch(in_subprocess=False)
    try:
        yield srv
    finally:
        srv.shutdown()


@pytest.fixture
def spawn_server() -> Iterator[Callable[..., "mesh.AgentServer"]]:
    """Factory of agent servers in subprocesses; all are stopped after the test."""
    import mesh

    started: list[mesh.AgentServer] = []

    def spawn(**kwargs: object) -> mesh.AgentServer:
        kwargs.setdefault("advertise", False)
        kwargs.setdefault("grace", 0.5)
        srv = mesh.AgentServer(**kwargs).launch(in_subprocess=True)  # type: ignore[arg-type]
        started.append(srv)
        return srv

    yield spawn
    for srv in started:
        srv.shutdown()


def run_cli(*args: str, timeout: float = 30, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m mesh.server ARGS``."""
    return subprocess.run(
        [sys.executable, "-m", "mesh.server", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )


def run_app(srv, code: str, kill: bool = False) -> None:
    """Run a short application process against ``srv`` (``HOST``, ``PORT`` and ``agents_lib``'s
    Store, Producer and Consumer are set for ``code``). With ``kill``, it is SIGKILLed once it
    prints ``ready``; otherwise it must exit 0."""
    script = (
        f"import sys; sys.path.insert(0, {TESTS!r})\n"
        "import mesh\nfrom agents_lib import Consumer, Producer, Store\n"
        f"HOST, PORT = {srv.host!r}, {srv.port}\n" + code
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        if kill:
            assert proc.stdout.readline().strip() == "ready"
            proc.kill()
        proc.wait(30)
        if not kill:
            assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def _all_threads_stopped(pid: int) -> bool:
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True  # gone
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("T", "t"):
            return False
    return True


def freeze(pid: int, timeout: float = 10.0) -> None:
    """SIGSTOP ``pid`` and wait until every thread of it has stopped.

    ``kill()`` returns before the stop takes effect: a request sent right after it can still be
    served (seen as "did not raise" in frozen-server tests on a loaded machine).
    """
    os.kill(pid, signal.SIGSTOP)
    wait_until(lambda: _all_threads_stopped(pid), timeout=timeout)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A private redis-server for one test (skipped where none is installed); its URL."""
    from redis_server import RedisServer  # a helper of tests/ (on sys.path above); most tests never need it

    if RedisServer.binary is None:
        pytest.skip("redis-server is not installed")
    srv = RedisServer().start()
    try:
        yield srv.url
    finally:
        srv.stop()
