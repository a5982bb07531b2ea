"""``MeshWorkerRuntimeHost``: where workers meet (the drop-in for ``GrpcWorkerAgentRuntimeHost``).

It is a mesh server hosting the :class:`~._directory.Directory` under a well-known name. Messages never
pass through it: stop or freeze it and the workers that already know each other go on.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Sequence
from typing import Any

import mesh

from . import _bridge, _wire
from ._directory import Directory
from ._net import heartbeat_default, split_address

__all__ = ["MeshWorkerRuntimeHost"]

log = logging.getLogger("mesh.autogen")


class MeshWorkerRuntimeHost:
    """The host of an AutoGen mesh: a directory of workers, agent types and subscriptions.

    Args:
        address: ``"host:port"`` to listen on (``"localhost:50051"``); port 0 picks a free one
            (read it back from :attr:`address`). Any address other than loopback needs ``MESH_SECRET``.
        extra_grpc_config: accepted for compatibility with the gRPC host; unused.
        advertise: announce the host's mesh server for discovery (workers with ``host_address=None``).
        heartbeat_timeout: a worker that does not answer a ping within it is dropped from the table.
        sweep_interval: seconds between liveness sweeps of the workers.
        insecure: allow a non-loopback address without a secret.
    """

    def __init__(
        self,
        address: str,
        extra_grpc_config: Any = None,
        *,
        advertise: bool = True,
        heartbeat_timeout: float | None = None,
        sweep_interval: float = 1.0,
        insecure: bool = False,
    ) -> None:
        self._host, self._port = split_address(address)
        if self._host in ("::", "[::]"):
            self._host = "0.0.0.0"
        self._advertise = advertise
        self._hb = float(heartbeat_timeout) if heartbeat_timeout is not None else heartbeat_default()
        self._sweep_interval = float(sweep_interval)
        self._insecure = insecure
        self._server: Any = None
        self._directory: Any = None
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    @property
    def address(self) -> str:
        """``host:port`` the host listens on (the bound port when 0 was asked)."""
        if self._server is None:
            return f"{self._host}:{self._port}"
        return f"{self._server.host}:{self._server.port}"

    def start(self) -> None:
        """Start the host in the background (returns once workers can join)."""
        if self._server is not None:
            raise RuntimeError("Host runtime is already started.")
        server = mesh.AgentServer(host=self._host, port=self._port, advertise=self._advertise,
                                  insecure=self._insecure, name=f"autogen-host-{self._port or 'any'}")
        server.launch(in_subprocess=False)
        try:
            self._directory = Directory(server.address, self._hb, to_dist={
                "host": server.host, "port": server.port, "name": _wire.DIRECTORY_NAME, "detached": True})
        except BaseException:
            server.shutdown()
            raise
        self._server = server
        self._stop.clear()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="autogen-host-sweep", daemon=True)
        self._sweeper.start()
        log.info("autogen host started at %s", server.address)

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self._sweep_interval):
            try:
                self._directory.sweep()
            except Exception as exc:
                log.debug("autogen host: sweep failed: %s", exc)

    def status(self) -> list[dict[str, Any]]:
        """The workers that joined: id, address, agent types, number of subscriptions."""
        if self._directory is None:
            raise RuntimeError("Host runtime is not started.")
        return self._directory.status()

    async def stop(self, grace: int = 5) -> None:
        """Stop the host."""
        if self._server is None:
            raise RuntimeError("Host runtime is not started.")
        await _bridge.blocking(self._stop_blocking)

    def _stop_blocking(self) -> None:
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(self._hb + 5)
        server, self._server = self._server, None
        self._directory = None
        if server is not None:
            server.shutdown()

    async def stop_when_signal(
        self, grace: int = 5, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
    ) -> None:
        """Run until one of ``signals`` arrives, then stop."""
        if self._server is None:
            raise RuntimeError("Host runtime is not started.")
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        for sig in signals:
            loop.add_signal_handler(sig, done.set)
        await done.wait()
        await self.stop(grace=grace)
