"""Virtual LANs for tests: network namespaces joined by a bridge, built inside an isolated namespace.

    with VirtualLan(n=3) as lan:            # hosts 1..3 at 198.18.0.1..3/24
        proc = lan.popen(1, [sys.executable, "-c", "..."], stdout=subprocess.PIPE)
        lan.link_down(1); lan.link_up(1)    # cut host 1 off, then heal it

Layout: a hub namespace ``<prefix>hub`` holding bridge ``br0`` and one port
``p<i>`` per host; host namespaces ``<prefix><i>`` each with ``lo`` and ``eth0``
(``198.18.0.<i>/24``, multicast on, route ``224.0.0.0/4`` via ``eth0``, and an IPv6
link-local address usable at once: duplicate address detection is off). The
prefix gets a random suffix, so parallel or leftover LANs never clash.

It refuses to run unless the current namespace has no interface but ``lo``
(see ``/work/shared/tools/isolated`` or ``bin/isolated``): the hosts' traffic
then cannot leave the machine. Needs root (or a user namespace mapped to root)
and a writable ``/run/netns``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import IO, Any

__all__ = ["LineReader", "VirtualLan", "in_isolated_netns"]

SUBNET = "198.18.0"  # RFC 2544 benchmarking range: never routed on a real network


def in_isolated_netns() -> bool:
    """True when the only network interface of this namespace is ``lo``."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return False
    return names == ["lo"]


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")


class VirtualLan:
    """``n`` hosts on one Ethernet segment, each in its own network namespace.

    Args:
        n: number of hosts (1..250).
        prefix: start of the namespace names; a random suffix is added.

    Raises:
        RuntimeError: not inside an isolated namespace, or ``ip`` failed.
    """

    def __init__(self, n: int = 3, prefix: str = "vt") -> None:
        if not in_isolated_netns():
            raise RuntimeError(
                "VirtualLan refuses to run: this namespace has interfaces besides lo; "
                "run inside /work/shared/tools/isolated (or bin/isolated)"
            )
        if not 1 <= n <= 250:
            raise ValueError(f"n must be in 1..250, not {n}")
        self.n = n
        self.prefix = f"{prefix}{uuid.uuid4().hex[:6]}"
        self.hub = f"{self.prefix}hub"
        self.namespaces = [f"{self.prefix}{i}" for i in range(1, n + 1)]
        self._procs: list[subprocess.Popen[Any]] = []
        self._made: list[str] = []
        self._closed = False
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        _ip("netns", "add", self.hub)
        self._made.append(self.hub)
        _ip("-n", self.hub, "link", "set", "lo", "up")
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.hub, "link", "set", "br0", "up")
        for i, ns in enumerate(self.namespaces, start=1):
            _ip("netns", "add", ns)
            self._made.append(ns)
            _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"p{i}", "netns", self.hub)
            _ip("-n", self.hub, "link", "set", f"p{i}", "master", "br0")
            _ip("-n", self.hub, "link", "set", f"p{i}", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            # IPv6 link-local addresses usable at once (no duplicate address detection wait)
            self.run(i, ["sh", "-c", "echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad 2>/dev/null || true"])
            _ip("-n", ns, "addr", "add", f"{self.host_ip(i)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up", "multicast", "on")
            _ip("-n", ns, "route", "replace", "224.0.0.0/4", "dev", "eth0")

    def namespace(self, i: int) -> str:
        """The namespace name of host ``i`` (1-based)."""
        if not 1 <= i <= self.n:
            raise IndexError(f"no host {i} (hosts are 1..{self.n})")
        return self.namespaces[i - 1]

    def host_ip(self, i: int) -> str:
        """The address of host ``i``: ``198.18.0.<i>``."""
        if not 1 <= i <= self.n:
            raise IndexError(f"no host {i} (hosts are 1..{self.n})")
        return f"{SUBNET}.{i}"

    def popen(self, i: int, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` on host ``i`` (``ip netns exec``, which execs: the PID is the command's).

        The process is stopped by :meth:`close` if still running. ``kwargs`` go to ``subprocess.Popen``.
        """
        if self._closed:
            raise RuntimeError("VirtualLan is closed")
        proc = subprocess.Popen(["ip", "netns", "exec", self.namespace(i), *argv], **kwargs)
        self._procs.append(proc)
        return proc

    def run(self, i: int, argv: Sequence[str], timeout: float = 10, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` on host ``i`` to completion (``subprocess.run``)."""
        return subprocess.run(["ip", "netns", "exec", self.namespace(i), *argv], timeout=timeout, **kwargs)

    def link_down(self, i: int) -> None:
        """Cut host ``i`` off the LAN (its ``eth0`` goes down; the kernel drops its routes)."""
        _ip("-n", self.namespace(i), "link", "set", "eth0", "down")

    def link_up(self, i: int) -> None:
        """Reconnect host ``i``, restoring the multicast route the kernel dropped with the link."""
        ns = self.namespace(i)
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "route", "replace", "224.0.0.0/4", "dev", "eth0")

    @staticmethod
    def stop_process(proc: subprocess.Popen[Any], grace: float = 3.0) -> int:
        """SIGTERM ``proc`` (by PID), SIGKILL it after ``grace`` seconds; returns its exit code."""
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        return proc.returncode

    def close(self) -> None:
        """Stop every process started with :meth:`popen`, then delete the namespaces. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for proc in self._procs:
            self.stop_process(proc)
        self._procs.clear()
        for ns in reversed(self._made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        self._made.clear()

    def __enter__(self) -> VirtualLan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LineReader:
    """Collect the lines of a pipe in a thread, so tests can wait for one with a deadline.

    Args:
        stream: a text-mode pipe (e.g. ``proc.stdout`` with ``text=True``).
    """

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), name="line-reader", daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                self._queue.put(line.rstrip("\n"))
        except (OSError, ValueError):  # closed under us
            pass
        self._queue.put(None)

    def wait_for(self, predicate: Callable[[str], Any], timeout: float) -> Any:
        """The first truthy ``predicate(line)`` over lines not yet consumed.

        Raises:
            TimeoutError: no line matched within ``timeout`` seconds (the message shows the last lines).
            EOFError: the stream ended first.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching line within {timeout} s; last lines: {self.lines[-5:]}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self._queue.put(None)  # stay at EOF for later calls
                raise EOFError(f"stream ended; last lines: {self.lines[-5:]}")
            self.lines.append(line)
            result = predicate(line)
            if result:
                return result

    def drain(self) -> list[str]:
        """Consume the lines already received, without waiting; returns them (also kept in ``lines``)."""
        got = []
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return got
            if line is None:
                self._queue.put(None)
                return got
            self.lines.append(line)
            got.append(line)

    def join(self, timeout: float = 5.0) -> None:
        """Wait for the reader thread to finish (after the stream closed)."""
        self._thread.join(timeout)


if __name__ == "__main__":  # pragma: no cover - manual smoke test: host 1 reaches host 2 over UDP
    import sys

    probe = (
        "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2);"
        "s.bind(('0.0.0.0', 0)); s.sendto(b'x', (sys.argv[1], 7)); print('sent to', sys.argv[1])"
    )
    with VirtualLan(2) as lan:
        out = lan.run(1, [sys.executable, "-c", probe, lan.host_ip(2)], capture_output=True, text=True)
        print(out.stdout or out.stderr, "namespaces:", lan.namespaces, "pid", os.getpid())
