"""A server in a subprocess: its command line, its config pipe, its ready line, and stopping it.

The child runs ``python -m mesh.server start ... --parent-stdin``: its flags come from
:meth:`ServerOptions.to_argv`, its secret from its environment, and the classes it must know
(pickled) on its stdin, which it then watches: when this process dies the pipe closes and the
child stops. It prints one ready line (:func:`ready_line`) once it accepts calls.
"""

from __future__ import annotations

import os
import pickle
import re
import select
import struct
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from mesh._core.address import normalize_address
from mesh._core.options import WILDCARD, ServerOptions, is_interface

if TYPE_CHECKING:
    import subprocess

__all__ = [
    "client_addresses", "http_url", "read_parent_config", "ready_info", "ready_line", "spawn_process", "start_process",
    "stop_process", "watch_parent",
]

_ADDRESS = re.compile(r"tcp://\S+:\d+")
_HTTP = re.compile(r", http=http://\S+:(\d+)[,;)]")
READY = "zmq-agent-server ready on "


def start_process(
    options: ServerOptions, timeout: float = 60.0, proc: subprocess.Popen | None = None,
) -> tuple[subprocess.Popen, int, str | None, int | None]:
    """Start a server process; returns once it is ready: ``(process, port, name, http port or None)``.

    ``proc``: the process :func:`spawn_process` started already (this waits for its ready line only).

    Raises:
        RuntimeError: it exited or gave no ready line within ``timeout``.
    """
    if proc is None:
        proc = spawn_process(options)
    assert proc.stdout is not None
    line = _read_ready_line(proc, timeout)
    match = _ADDRESS.search(line) if line.startswith(READY) else None
    if match is None:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"agent server subprocess did not start: {line.strip() or 'it exited'}")
    port = int(match.group(0).rsplit(":", 1)[1])
    name = re.search(r"\(name=(.*?), capacity=", line)
    http = _HTTP.search(line)
    threading.Thread(target=_forward, args=(proc.stdout,), name="mesh-child-stdout", daemon=True).start()
    return proc, port, name.group(1) if name else options.name, int(http.group(1)) if http else None


def spawn_process(options: ServerOptions) -> subprocess.Popen:
    """Start a server process and send it its config, without waiting for it: the caller then
    waits for its ready line with :func:`start_process` (``proc=``), possibly on another thread.

    Raises:
        OSError: the process could not be started.
    """
    import subprocess  # here: a plain server never starts a process, and the module costs ~0.5 MiB

    args = [sys.executable, "-m", "mesh.server", "start", *options.to_argv(), "--parent-stdin"]
    env = dict(os.environ)
    env["MESH_SYS_PATH"] = os.pathsep.join(p for p in sys.path if p)
    if options.secret:
        env["MESH_SECRET"] = options.secret.decode()
    # A session of its own: a Ctrl-C in the terminal reaches this process only, which then stops
    # the server once (a server that got the terminal's SIGINT and then ours would take the
    # second signal as "exit at once" and cut its grace short). It still dies with us: it
    # watches its stdin, our pipe.
    proc = subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True, start_new_session=True
    )
    blob = _dump_classes(options.custom_agent_classes)
    assert proc.stdin is not None
    try:
        proc.stdin.write(struct.pack("!Q", len(blob)) + blob)
        proc.stdin.flush()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def _dump_classes(classes: list[type]) -> bytes:
    """The classes for the child's config pipe: by value (cloudpickle) when there are any."""
    if not classes:  # the usual case: no cloudpickle to load here (nor in the child to read it)
        return pickle.dumps([])
    import cloudpickle

    return cloudpickle.dumps(classes)


def stop_process(proc: subprocess.Popen, timeout: float) -> None:
    """Stop a server process (EOF on its stdin, then SIGTERM; SIGKILL after ``timeout``)."""
    if proc.poll() is None:
        try:
            proc.stdin.close()  # type: ignore[union-attr]  # the child sees EOF and stops
        except (OSError, AttributeError):
            pass
        proc.terminate()
        import subprocess

        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass


def read_parent_config() -> list[type]:
    """The child's end of the config pipe: the classes its parent sent (``--parent-stdin``)."""
    (n,) = struct.unpack("!Q", _read_exact(8))
    return list(pickle.loads(_read_exact(n)))


def _read_exact(n: int) -> bytes:
    # raw reads on fd 0: no buffered reader whose lock a daemon thread holds at exit
    data = b""
    while len(data) < n:
        chunk = os.read(0, n - len(data))
        if not chunk:
            raise SystemExit("zmq-agent-server: parent closed the config pipe")
        data += chunk
    return data


def watch_parent(server: Any) -> None:
    """Stop when the parent process dies: its end of our stdin closes."""
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    server.shutdown()


def client_addresses(host: str, port: int) -> list[str]:
    """The ``tcp://host:port`` addresses a client can use for a server bound to ``host``.

    A specific address is itself. A wildcard (``0.0.0.0``, ``::``, ``*``) or an interface name is
    every matching address of this machine, non-loopback first and loopback last (IPv6 link-local
    addresses, which need a scope, are left out).
    """
    wildcard = host in WILDCARD
    if not wildcard and not is_interface(host):
        return [normalize_address(host, port)]
    try:
        from zeroconf import IPVersion

        from discovery._net import local_addresses

        version = IPVersion.All if host == "::" else IPVersion.V4Only
        found = local_addresses(version, None if wildcard else [host])
    except Exception:  # pragma: no cover  (no interface table: fall back to loopback)
        found = []
    found = [a for a in found if "%" not in a]
    if not found:
        found = ["::1" if host == "::" else "127.0.0.1"] if wildcard else []
    return [normalize_address(a, port) for a in found] or [normalize_address(host, port)]


def http_url(host: str, port: int) -> str:
    """``http://host:port`` a client can use for an HTTP server bound to ``host`` (loopback for a wildcard)."""
    if host in WILDCARD:
        host = "::1" if host == "::" else "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def ready_info(server: Any) -> dict:
    """What the ready line says about a running server, as a dict (``start --json`` prints it)."""
    addresses = client_addresses(server.host, server.port)
    return {
        "event": "ready",
        "address": addresses[0],
        "addresses": addresses,
        "bound": server.address,
        "name": server.name,
        "capacity": server.capacity,
        "pool": server.pool_type,
        "advertised": bool(server.advertise),
        "auth": bool(server.secret),
        "pid": server.pid,
        "http": server.http_url,
    }


def ready_line(info: dict) -> str:
    """The one line a server prints once it accepts calls.

    ``zmq-agent-server ready on tcp://HOST:PORT (name=..., capacity=..., pool=..., advertised=...,
    auth=..., pid=...)``: the first ``tcp://host:port`` is an address a client can use. A server
    bound to a wildcard or an interface name adds ``; bound to 0.0.0.0, also reachable at tcp://...``
    inside the parentheses. A server with HTTP adds ``, http=http://HOST:PORT``.
    """
    line = (
        f"{READY}{info['address']} (name={info['name']}, capacity={info['capacity']}, "
        f"pool={info['pool']}, advertised={'yes' if info['advertised'] else 'no'}, "
        f"auth={'on' if info['auth'] else 'off'}, pid={info['pid']}"
    )
    if info.get("http"):
        line += f", http={info['http']}"
    if info["bound"] != info["address"]:
        bound = info["bound"][len("tcp://"):].rpartition(":")[0]
        line += f"; bound to {bound}"
        if len(info["addresses"]) > 1:
            line += ", also reachable at " + " ".join(info["addresses"][1:])
    return line + ")"


def _read_ready_line(proc: subprocess.Popen, timeout: float) -> str:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"agent server subprocess gave no address within {timeout:g} s")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                proc.wait()
                return buf.decode(errors="replace")
            buf += chunk
    line, _, rest = buf.partition(b"\n")
    if rest:
        sys.stdout.write(rest.decode(errors="replace"))
    return line.decode(errors="replace")


def _forward(stream: Any) -> None:
    try:
        for line in iter(stream.readline, b""):
            sys.stdout.write(line.decode(errors="replace"))
            sys.stdout.flush()
    except (OSError, ValueError):
        pass
