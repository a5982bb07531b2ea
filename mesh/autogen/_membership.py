"""A worker's place in the mesh: its own in-process mesh server with its endpoint, and its entry in
the host's directory (joined at start, told of every change, refreshed every ``poll_interval``, left
at stop). A stopped or frozen host only delays joins: the table already held keeps working."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import mesh

from . import _bridge, _wire
from ._endpoint import Endpoint, register_runtime, unregister_runtime
from ._net import local_ip_towards, split_address
from ._table import Table

__all__ = ["Membership"]

log = logging.getLogger("mesh.autogen")


class Membership:
    """Server, endpoint and directory of one worker. ``info()`` gives what the directory lists for it."""

    def __init__(self, worker_id: str, table: Table, info: Callable[[], dict[str, Any]], *,
                 host_address: str | None, bind_host: str | None, capacity: int, max_message_size: int,
                 join_timeout: float,
                 poll_interval: float, heartbeat: float, stop: threading.Event) -> None:
        self.worker_id = worker_id
        self._table = table
        self._info = info
        self._host_address = host_address
        self._bind_host = bind_host
        self._capacity = capacity
        self._max_message_size = max_message_size
        self._join_timeout = join_timeout
        self._poll_interval = poll_interval
        self._heartbeat = heartbeat
        self._stop = stop
        self.server: Any = None
        self.endpoint: Any = None
        self.reply_ref: list[Any] | None = None  # the endpoint as plain data, for requests' reply address
        self.directory: Any = None

    def join(self, token: str, runtime: Any) -> None:
        """Find the directory, start the server with ``runtime``'s endpoint, join (blocking)."""
        directory = self._find_directory()
        dhost, dport = split_address(directory.info()["address"])
        bind = self._bind_host or local_ip_towards(dhost, dport)
        server = mesh.AgentServer(host=bind, port=0, capacity=self._capacity, advertise=False,
                                  max_message_size=self._max_message_size,
                                  name=f"autogen-worker-{self.worker_id[:8]}")
        server.launch(in_subprocess=False)
        try:
            register_runtime(token, runtime)
            self.endpoint = Endpoint(token, to_dist={"host": server.host, "port": server.port})
            self.reply_ref = _wire.endpoint_ref(self.endpoint)
            self.server = server
            self.directory = directory
            self._table.apply(directory.join(self.worker_id, self.endpoint, self._info()))
        except BaseException:
            unregister_runtime(token)
            server.shutdown()
            self.server = None
            raise

    def _find_directory(self) -> Any:
        deadline = time.monotonic() + self._join_timeout
        last: BaseException | None = None
        while True:
            try:
                if self._host_address is None:
                    return mesh.get(_wire.DIRECTORY_NAME, timeout=1.0)
                host, port = split_address(self._host_address)
                return mesh.get(_wire.DIRECTORY_NAME, host=host, port=port)
            except mesh.AuthenticationError:
                raise
            except mesh.MeshError as exc:
                last = exc
            if time.monotonic() >= deadline:
                where = self._host_address or "any discovered mesh server"
                raise mesh.ServerUnavailable(f"no autogen host (directory) found at {where}: {last}") from last
            self._stop.wait(0.2)

    def leave(self) -> None:
        """Leave the directory (a frozen host must not hold the stop: at most a heartbeat and a second)."""
        directory, self.directory = self.directory, None
        if directory is not None:
            leaver = threading.Thread(target=_quiet, args=(directory.leave, self.worker_id), daemon=True)
            leaver.start()
            leaver.join(self._heartbeat + 1)

    def shutdown(self, token: str) -> None:
        unregister_runtime(token)
        server, self.server = self.server, None
        if server is not None:
            server.shutdown()

    async def tell(self, method: str, arg: Any) -> None:
        """Tell the directory of a change here (a type, a subscription), and take the table it returns."""
        directory = self.directory
        if directory is None:  # not started yet: join() will carry it
            return
        try:
            table = await _bridge.blocking(getattr(directory, method), self.worker_id, arg)
        except mesh.AgentNotFound:  # dropped by the directory (e.g. it thought us dead): join again
            table = await _bridge.blocking(directory.join, self.worker_id, self.endpoint, self._info())
        self._table.apply(table)

    def poll(self, running: Callable[[], bool]) -> None:
        """Until stopped (a thread): refresh the table; join again when the directory lost us."""
        while not self._stop.wait(self._poll_interval):
            directory = self.directory
            if directory is None:
                return
            try:
                table = directory.table()
                self._table.apply(table)
                if self.worker_id not in table.get("workers", {}) and running():
                    log.info("autogen: worker %s not listed by the directory; joining again", self.worker_id)
                    self._table.apply(directory.join(self.worker_id, self.endpoint, self._info()))
            except Exception as exc:  # host stopped or frozen: the table we have keeps working
                log.debug("autogen: directory refresh failed: %s", exc)


def _quiet(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception as exc:
        log.debug("autogen: %s failed: %s", getattr(fn, "__name__", fn), exc)
