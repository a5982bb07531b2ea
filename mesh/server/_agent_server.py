"""``AgentServer``: an agent server, in this process (:mod:`._host`) or in a subprocess (:mod:`._launcher`)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mesh._core.address import normalize_address
from mesh._core.options import ServerOptions
from mesh.server._launcher import http_url, ready_info, ready_line, start_process, stop_process

if TYPE_CHECKING:
    import subprocess  # a plain server never starts one: the module (~0.5 MiB) loads when a child is launched

    # The serving machinery (transport, zmq, the dispatch) loads when a server starts in this
    # process: a process that launches a child server does not load it (launch() < 0.1 s).
    from mesh.server._dispatch import Servicer
    from mesh.server._host import Host

__all__ = ["AgentServer", "RpcAgentServerLauncher"]


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
        http_port: also serve HTTP on this port (0: a free one; read it back from ``.http_port``):
            every named agent as an A2A agent, ``/healthz`` and ``/metrics`` (extra ``[http]``;
            see docs/edge.md). ``None`` (default): no HTTP.
        http_host: address of the HTTP server; loopback by default. Any other address requires
            ``http_token_file``.
        http_token_file: file holding the bearer token every HTTP request must carry.
        http_max_body: largest HTTP request body, bytes.
        state_store: where durable agents' checkpoints live (``checkpoint=True``, ``max_restarts``):
            a directory path or ``redis://...``; default ``MESH_STATE_STORE``, else a per-user directory.

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
        http_port: int | None = None,
        http_host: str = "127.0.0.1",
        http_token_file: str | None = None,
        http_max_body: int = 1 << 20,
        state_store: str | None = None,
    ) -> None:
        # The signature above is the public one (API.md); ServerOptions validates and normalizes it.
        options = ServerOptions(**{k: v for k, v in locals().items() if k != "self"})
        self.options = options
        for name_, value in vars(options).items():  # server.host, server.capacity, ... as before
            setattr(self, name_, value)
        self._host: Host | None = None
        self._proc: subprocess.Popen | None = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._state = "new"
        self._announced = False

    @property
    def _servicer(self) -> Servicer | None:
        return self._host.servicer if self._host is not None else None

    # ------------------------------------------------------------ properties
    @property
    def http_url(self) -> str | None:
        """``http://host:port`` of the HTTP edge of the running server, or ``None`` without one."""
        if self.http_port is None or not self.port:
            return None
        return http_url(self.http_host, self.http_port)

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
                # (a process already spawned for it, see mesh._placement._start_spare: its ready line only)
                self._proc, self.port, self.name, http_port = start_process(self.options, proc=self._proc)
            else:
                from mesh.server._host import Host

                self._host = Host(self.options)
                self.port, self.name = self._host.start(self.shutdown, lambda port: normalize_address(self.host, port))
                http_port = self._host.http_port
            if self.http_port is not None:
                self.http_port = http_port
        except BaseException:
            self._state = "stopped"
            raise
        self._state = "running"
        return self

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
                stop_process(self._proc, self.grace + 5)
            elif self._host is not None:
                self._host.stop(self.grace)
        finally:
            self._state = "stopped"
            self._stopped.set()

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
