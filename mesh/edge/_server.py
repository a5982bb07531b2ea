"""The edge's HTTP server: uvicorn on a thread and an event loop of its own.

The socket is bound here, on the caller's thread, so that a port in use fails ``start`` at once
(and port 0 is read back). The mesh's I/O thread never runs HTTP code: a slow or malformed HTTP
client costs the edge's loop at most one connection slot (``limit_concurrency``), not the mesh.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn

from mesh._core import runtime
from mesh._core.options import ServerOptions, read_token
from mesh.edge._agents import AgentDirectory
from mesh.edge._app import build_app
from mesh.server._dispatch import Servicer
from mesh.server._launcher import http_url

__all__ = ["EdgeServer"]

log = logging.getLogger("mesh.edge")

CONNECTIONS_MAX = 512  # open HTTP connections; past it new ones get 503
_START_TIMEOUT = 15.0


class EdgeServer:
    """A running edge: ``.port``, ``.url``, ``.stop()``."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, port: int, url: str) -> None:
        self._server = server
        self._thread = thread
        self.port = port
        self.url = url

    @classmethod
    def start(cls, servicer: Servicer, options: ServerOptions, address: str) -> EdgeServer:
        """Bind and serve; returns once the server accepts connections.

        Raises:
            ValueError: the address cannot be bound, or this process cannot call its own agents.
        """
        rt = runtime.current()
        if options.secret and rt.settings.secret != options.secret:
            raise ValueError(
                "the HTTP edge calls the agents through this process's mesh client, which does not have the "
                "server's secret: set MESH_SECRET (or call mesh.init(secret=...)) before starting the server"
            )
        token = read_token(options.http_token_file) if options.http_token_file else None
        sock = _bind(options.http_host, options.http_port or 0)
        port = sock.getsockname()[1]
        directory = AgentDirectory(servicer, address, token)
        app = build_app(directory, token=token, max_body=options.http_max_body)
        config = uvicorn.Config(
            app, loop="asyncio", http="h11", lifespan="off", log_level="warning", access_log=False,
            server_header=False, limit_concurrency=CONNECTIONS_MAX, timeout_keep_alive=5,
            timeout_graceful_shutdown=max(1, int(options.grace)), h11_max_incomplete_event_size=64 * 1024,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=_run, args=(server, sock), name=f"mesh-http-{port}", daemon=True)
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                raise ValueError(f"the HTTP server on {options.http_host}:{port} did not start")
            time.sleep(0.01)
        return cls(server, thread, port, http_url(options.http_host, port))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let open requests end (the server's grace), close. Idempotent."""
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():  # pragma: no cover
            self._server.force_exit = True
            self._thread.join(2.0)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted connections inherit it
        sock.bind(("" if host in ("0.0.0.0", "*") else host, port))
        sock.listen(512)
    except OSError as exc:
        sock.close()
        raise ValueError(f"cannot serve HTTP on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _run(server: uvicorn.Server, sock: socket.socket) -> None:
    try:
        server.run(sockets=[sock])
    except BaseException:  # noqa: BLE001 - logged; the server goes on without HTTP
        log.exception("the HTTP edge stopped")
    finally:
        sock.close()
