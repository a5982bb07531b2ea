"""``AgentServer``: an agent server, in this process or in a subprocess."""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

import transport
from mesh import _future
from mesh._classes import ClassResolver, load_agent_dir
from mesh._client import get_client, normalize_address
from mesh._pool import make_pool
from mesh._servicer import Servicer

__all__ = ["AgentServer", "RpcAgentServerLauncher", "check_host", "is_loopback", "ready_line"]

log = logging.getLogger("mesh.server")

_REPLY_DRAIN = 0.2  # seconds a server that just answered its last calls stays open before closing
_ADDRESS = re.compile(r"tcp://\S+:\d+")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_WILDCARD = ("0.0.0.0", "::", "*")
_HOST_PORT = re.compile(r"^(?P<host>\[[^\]]*\]|[^:\[\]]+):(?P<port>\d*)$")


def check_host(host: Any) -> str:
    """The address to bind for ``host``, or ``ValueError`` naming what is wrong with it.

    Accepted: an IPv4 or IPv6 address (``[::1]`` too), a wildcard (``0.0.0.0``, ``::``, ``*``),
    ``localhost``, a network interface name (``eth0``) or a host name that resolves (bound as its
    first address: libzmq cannot bind a name).
    """
    if not isinstance(host, str):
        raise ValueError(f"host must be a string such as '127.0.0.1', not {type(host).__name__} {host!r}")
    text = host.strip()
    if not text:
        raise ValueError("host is empty: use an address such as 127.0.0.1 (loopback) or 0.0.0.0 (every interface)")
    if "://" in text or "/" in text:
        raise ValueError(
            f"host {host!r} is not an address: give the bare address (e.g. --host 127.0.0.1) and the port "
            "separately (--port)"
        )
    if text in ("[::]",):
        return "::"
    if text in _WILDCARD:
        return text
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        ipaddress.ip_address(bare.split("%", 1)[0])
        return bare
    except ValueError:
        pass
    match = _HOST_PORT.match(text)
    if match:
        where = match.group("host").strip("[]")
        port = match.group("port") or "PORT"
        raise ValueError(
            f"host {host!r} includes a port: pass the port separately (--host {where} --port {port}, "
            f"or host={where!r}, port={port})"
        )
    if re.fullmatch(r"[0-9.]+", text) or ":" in text:
        raise ValueError(f"host {host!r} is not a valid IP address")
    if text == "localhost":
        return "127.0.0.1"
    if _is_interface(text):
        return text
    try:
        infos = socket.getaddrinfo(text, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ValueError(
            f"host {host!r} is not an IP address or an interface of this machine, and does not resolve ({exc})"
        ) from None
    addrs = [info[4][0] for info in infos]
    addrs.sort(key=lambda a: ":" in a)  # IPv4 first
    return addrs[0]


def _is_interface(name: str) -> bool:
    try:
        import ifaddr
    except ImportError:  # pragma: no cover  (zeroconf depends on it)
        return False
    try:
        return any(adapter.name == name for adapter in ifaddr.get_adapters())
    except Exception:  # pragma: no cover
        return False


class AgentServer:
    """An agent server: a ROUTER socket and a pool of worker threads.

    Args:
        host: address to bind; loopback by default. Any other address
            requires a shared secret (``secret``, ``MESH_SECRET``) unless
            ``insecure=True``.
        port: port to bind; 0 picks a free one (read it back from ``.port``).
        capacity: worker threads running objects' calls at once.
        custom_agent_classes: classes the server knows (needed with ``no_code``).
        agent_dir: folder whose ``*.py`` files define more classes.
        pool_type: ``"local"`` or ``"redis"``: where async results wait.
        redis_url: the Redis server of a ``redis`` pool.
        max_expire_time: seconds a result is kept.
        max_len: most results kept (local pool).
        max_message_size: largest request accepted, bytes.
        advertise: announce the server for discovery (zeroconf and the local registry).
        name: server name (default: host name and port).
        secret: shared secret; default ``MESH_SECRET``.
        insecure: allow a non-loopback address without a secret.
        no_code: accept only known classes, never a class sent by value.
        grace: seconds running calls get to finish at shutdown.

    Raises:
        ValueError: bad arguments, or a non-loopback host without a secret.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        capacity: int = 32,
        custom_agent_classes: Iterable[type] = (),
        agent_dir: str | None = None,
        pool_type: str = "local",
        redis_url: str | None = None,
        max_expire_time: float = 7200,
        max_len: int = 10000,
        max_message_size: int = 32 * 2**20,
        advertise: bool = True,
        name: str | None = None,
        secret: bytes | str | None = None,
        insecure: bool = False,
        no_code: bool = False,
        grace: float = 5.0,
        lease_ttl: float = 30.0,
        local_mode: bool | None = None,
    ) -> None:
        host = check_host(host)  # first: a bad address is reported as such, before any secret check
        if local_mode is True and not is_loopback(host):
            raise ValueError("local_mode=True needs a loopback host")
        self.host = host
        try:
            self.port = int(port)
        except (TypeError, ValueError):
            raise ValueError(f"port {port!r} is not a number") from None
        if not 0 <= self.port < 65536:
            raise ValueError(f"port {port} is out of range")
        if int(capacity) < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        if pool_type not in ("local", "redis"):
            raise ValueError(f"unknown pool_type {pool_type!r}: use 'local' or 'redis'")
        if pool_type == "redis" and not redis_url:
            raise ValueError("pool_type='redis' needs redis_url")
        for what, value in (("max_expire_time", max_expire_time), ("lease_ttl", lease_ttl)):
            if not math.isfinite(float(value)) or float(value) <= 0:
                raise ValueError(f"{what} must be a positive number of seconds, got {value}")
        if not math.isfinite(float(grace)) or float(grace) < 0:
            raise ValueError(f"grace must be 0 or more seconds, got {grace}")
        if int(max_len) < 1:
            raise ValueError(f"max_len must be at least 1, got {max_len}")
        self.capacity = int(capacity)
        self.custom_agent_classes = list(custom_agent_classes)
        self.agent_dir = agent_dir
        self.pool_type = pool_type
        self.redis_url = redis_url
        self.max_expire_time = float(max_expire_time)
        self.max_len = int(max_len)
        self.max_message_size = int(max_message_size)
        self.advertise = advertise
        self.name = name
        if isinstance(secret, str):
            secret = secret.encode()
        self.secret = secret if secret else transport.secret_from_env()
        self.insecure = insecure
        self.no_code = no_code
        self.grace = float(grace)
        self.lease_ttl = float(lease_ttl)
        if not is_loopback(self.host) and not self.secret and not insecure:
            raise ValueError(
                f"refusing to listen on {self.host} without a shared secret: anyone who reaches "
                "the port could run code here. Set MESH_SECRET (or --secret-file), or pass "
                "insecure=True (--insecure) on a network you trust."
            )
        self._servicer: Servicer | None = None
        self._router: transport.Router | None = None
        self._proc: subprocess.Popen | None = None
        self._advertiser: Any = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._state = "new"
        self._announced = False

    # ------------------------------------------------------------ properties
    @property
    def address(self) -> str:
        """``tcp://host:port`` of the running server."""
        return normalize_address(self.host, self.port) if self.port else f"tcp://{self.host}:0"

    # ---------------------------------------------------------------- launch
    def launch(self, in_subprocess: bool = True) -> AgentServer:
        """Start the server; returns once it accepts calls.

        Args:
            in_subprocess: run it in a new Python process (default) or in this one.

        Raises:
            RuntimeError: already launched, or the subprocess failed to start.
        """
        with self._lock:
            if self._state != "new":
                raise RuntimeError(f"server already {self._state}")
            self._state = "starting"
        try:
            if in_subprocess:
                self._launch_subprocess()
            else:
                self._launch_here()
        except BaseException:
            self._state = "stopped"
            raise
        self._state = "running"
        return self

    def _launch_here(self) -> None:
        resolver = ClassResolver(self.custom_agent_classes, no_code=self.no_code)
        if self.agent_dir:
            for cls in load_agent_dir(self.agent_dir):
                resolver.add(cls)
        name = self.name or f"{socket.gethostname()[:24]}-{os.getpid()}-{os.urandom(2).hex()}"
        pool = make_pool(
            self.pool_type, redis_url=self.redis_url, max_len=self.max_len, max_expire_time=self.max_expire_time,
            name=name, secret=self.secret,
        )
        if hasattr(pool, "ping"):
            try:
                pool.ping()
            except Exception as exc:  # serve anyway: results still reach callers, and Redis may come back
                log.warning("result pool not reachable now (%s): results are not stored until it is", exc)
        self._servicer = Servicer(
            name=name,
            capacity=self.capacity,
            pool=pool,
            resolver=resolver,
            max_message_size=self.max_message_size,
            on_stop=self.shutdown,
            lease_ttl=self.lease_ttl,
            pool_url=self.redis_url if self.pool_type == "redis" else None,
        )
        keys = transport.derive_keys(self.secret) if self.secret else None
        node = get_client().node
        try:
            self._router = node.add_router(
                self.host, self.port, self._servicer.handle, keys=keys, max_message_size=self.max_message_size,
                on_burst_end=self._servicer.start_ready,
            )
        except OSError:  # e.g. the address is in use
            self._servicer.close(0)
            raise
        self._servicer.io_ident = node._ident
        self.port = self._router.port
        self.name = name
        _future.local_producers[self.address] = self._servicer.local_result
        self._sweep = self._servicer.sweep  # one bound method, so remove_timer finds it
        self._expire_early = self._servicer.expire_early
        node.add_timer(min(5.0, self.lease_ttl / 3), self._sweep)
        node.add_timer(0.25, self._expire_early)
        if self.advertise:
            self._start_advertising()

    def _start_advertising(self) -> None:
        try:
            from mesh._discovery import advertise
        except ImportError:  # pragma: no cover
            return
        try:
            self._advertiser = advertise(self.name or "", self.host, self.port, capacity=self.capacity, auth=bool(self.secret))
        except Exception as exc:  # discovery is optional: the server still serves
            log.warning("could not advertise the server: %s", exc)

    def _launch_subprocess(self) -> None:
        args = [
            sys.executable, "-m", "mesh.server", "start",
            "--host", self.host, "--port", str(self.port),
            "--capacity", str(self.capacity),
            "--pool-type", self.pool_type,
            "--max-expire-time", str(self.max_expire_time),
            "--max-len", str(self.max_len),
            "--max-message-size", str(self.max_message_size),
            "--grace", str(self.grace),
            "--lease-ttl", str(self.lease_ttl),
            "--parent-stdin",
        ]
        if self.name:
            args += ["--name", self.name]
        if self.agent_dir:
            args += ["--agent-dir", self.agent_dir]
        if self.redis_url:
            args += ["--redis-url", self.redis_url]
        if not self.advertise:
            args.append("--no-advertise")
        if self.insecure:
            args.append("--insecure")
        if self.no_code:
            args.append("--no-code")
        env = dict(os.environ)
        env["MESH_SYS_PATH"] = os.pathsep.join(p for p in sys.path if p)
        if self.secret:
            env["MESH_SECRET"] = self.secret.decode()
        # A session of its own: a Ctrl-C in the terminal reaches this process only, which then stops
        # the server once (a server that got the terminal's SIGINT and then ours would take the
        # second signal as "exit at once" and cut its grace short). It still dies with us: it
        # watches its stdin, our pipe.
        proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True, start_new_session=True
        )
        self._proc = proc
        import cloudpickle

        blob = cloudpickle.dumps(self.custom_agent_classes)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(struct.pack("!Q", len(blob)) + blob)
        proc.stdin.flush()
        line = _read_ready_line(proc, timeout=60.0)
        match = _ADDRESS.search(line) if line.startswith("zmq-agent-server ready on ") else None
        if match is None:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"agent server subprocess did not start: {line.strip() or 'it exited'}")
        address = match.group(0)
        self.port = int(address.rsplit(":", 1)[1])
        name = re.search(r"\(name=(.*?), capacity=", line)
        self.name = name.group(1) if name else self.name
        threading.Thread(target=_forward, args=(proc.stdout,), name="mesh-child-stdout", daemon=True).start()

    # -------------------------------------------------------------- lifetime
    def wait_until_terminate(self) -> None:
        """Block until the server stops (``shutdown()``, a ``stop`` request or a signal).

        Called from the main thread, it makes the script a foreground server like
        ``zmq-agent-server start``: it prints the ready line on stderr, and SIGTERM or SIGINT
        stop the server cleanly (running calls get ``grace``) and make it return, so the script
        exits 0. A second signal exits at once. Handlers the program installed itself are kept.
        """
        if self._state == "running" and not self._announced:
            self._announced = True
            try:
                print(ready_line(ready_info(self)), file=sys.stderr, flush=True)
            except (OSError, ValueError):  # no stderr
                pass
        stopper: list[threading.Thread] = []
        restore = self._catch_signals(stopper)
        try:
            if self._proc is not None:
                self._proc.wait()
                self._stopped.set()
            else:
                self._stopped.wait()
            for t in stopper:  # a signal came: let the shutdown it started finish
                t.join(self.grace + 10)
        finally:
            restore()

    def _catch_signals(self, stopper: list[threading.Thread]) -> Any:
        """SIGTERM / SIGINT handlers that stop this server; returns what restores the old ones."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        defaults = {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}
        old: dict[int, Any] = {}

        def on_signal(signum: int, frame: Any) -> None:
            if stopper:
                os._exit(130 if signum == signal.SIGINT else 0)
            t = threading.Thread(target=self.shutdown, name="mesh-signal-stop", daemon=True)
            stopper.append(t)
            t.start()

        for signum, default in defaults.items():
            try:
                if signal.getsignal(signum) is default:
                    old[signum] = signal.signal(signum, on_signal)
            except (ValueError, OSError):  # pragma: no cover
                pass

        def restore() -> None:
            for signum, handler in old.items():
                try:
                    signal.signal(signum, handler)
                except (ValueError, OSError):  # pragma: no cover
                    pass

        return restore

    def shutdown(self) -> None:
        """Stop the server: finish running calls (within ``grace``), fail queued ones. Idempotent."""
        with self._lock:
            if self._state in ("stopping", "stopped", "new"):
                self._state = "stopped" if self._state == "new" else self._state
                return
            self._state = "stopping"
        try:
            if self._proc is not None:
                _stop_process(self._proc, self.grace + 5)
            else:
                self._shutdown_here()
        finally:
            self._state = "stopped"
            self._stopped.set()

    def _shutdown_here(self) -> None:
        if self._advertiser is not None:
            try:
                self._advertiser.close()
            except Exception as exc:  # pragma: no cover
                log.warning("could not unregister from discovery: %s", exc)
        _future.local_producers.pop(self.address, None)
        if self._servicer is not None:
            get_client().node.remove_timer(self._sweep)
            get_client().node.remove_timer(self._expire_early)
            if self._servicer.close(self.grace):
                # Replies to the last calls were just queued. Keep the socket open a moment, reading
                # (and refusing) what still comes: a socket closed with unread input resets the
                # connection, and a reset can destroy replies the client has not read yet.
                time.sleep(_REPLY_DRAIN)
        if self._router is not None:
            self._router.close()

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None else os.getpid()

    def __enter__(self) -> AgentServer:
        if self._state == "new":
            self.launch(in_subprocess=False)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"<AgentServer {self.name or ''} {self.address} {self._state}>"


RpcAgentServerLauncher = AgentServer


def client_addresses(host: str, port: int) -> list[str]:
    """The ``tcp://host:port`` addresses a client can use for a server bound to ``host``.

    A specific address is itself. A wildcard (``0.0.0.0``, ``::``, ``*``) or an interface name is
    every matching address of this machine, non-loopback first and loopback last (IPv6 link-local
    addresses, which need a scope, are left out).
    """
    wildcard = host in _WILDCARD
    if not wildcard and not _is_interface(host):
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


def ready_info(server: AgentServer) -> dict:
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
    }


def ready_line(info: dict) -> str:
    """The one line a server prints once it accepts calls.

    ``zmq-agent-server ready on tcp://HOST:PORT (name=..., capacity=..., pool=..., advertised=...,
    auth=..., pid=...)``: the first ``tcp://host:port`` is an address a client can use. A server
    bound to a wildcard or an interface name adds ``; bound to 0.0.0.0, also reachable at tcp://...``
    inside the parentheses.
    """
    line = (
        f"zmq-agent-server ready on {info['address']} (name={info['name']}, capacity={info['capacity']}, "
        f"pool={info['pool']}, advertised={'yes' if info['advertised'] else 'no'}, "
        f"auth={'on' if info['auth'] else 'off'}, pid={info['pid']}"
    )
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


def _stop_process(proc: subprocess.Popen, timeout: float) -> None:
    if proc.poll() is None:
        try:
            proc.stdin.close()  # type: ignore[union-attr]  # the child sees EOF and stops
        except (OSError, AttributeError):
            pass
        proc.terminate()
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
