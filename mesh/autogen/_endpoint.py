"""A worker's endpoint: the mesh object on the worker's own in-process server that other workers
(and the directory) call. It never runs agent code on a mesh thread: it hands every delivery to the
runtime's asyncio loop and returns at once, so deliveries never block each other (no deadlock when
handlers call each other across workers) and arrive in the order each sender sent them.
"""

from __future__ import annotations

import threading
from typing import Any

import mesh

__all__ = ["Endpoint", "register_runtime", "unregister_runtime"]

_runtimes: dict[str, Any] = {}
_lock = threading.Lock()


def register_runtime(token: str, runtime: Any) -> None:
    with _lock:
        _runtimes[token] = runtime


def unregister_runtime(token: str) -> None:
    with _lock:
        _runtimes.pop(token, None)


class Endpoint(metaclass=mesh.RpcMeta):
    def __init__(self, token: str) -> None:
        self._token = token

    def _runtime(self) -> Any:
        rt = _runtimes.get(self._token)
        if rt is None:
            raise mesh.AgentNotFound("this autogen worker runtime has stopped")
        return rt

    @mesh.async_func
    def deliver(self, batch: Any) -> int:
        """Events, RPC requests, responses and control requests, in the order the sender made them."""
        return self._runtime()._receive(batch)

    @mesh.async_func
    def update(self, table: Any) -> bool:
        """A new directory table (pushed by the directory)."""
        self._runtime()._apply_table(table)
        return True

    def __mesh_status__(self) -> dict[str, Any]:
        """What ``zmq-agent-server status`` shows under a worker's endpoint: its id and agent types."""
        rt = _runtimes.get(self._token)
        if rt is None:
            return {"worker": "stopped"}
        return {"worker": rt.worker_id, "agent types": sorted(rt._registry.factories)}

    @mesh.async_func
    def ping(self) -> str:
        return self._runtime().worker_id
