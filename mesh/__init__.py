"""zmq-agent-mesh: a ZeroMQ peer-to-peer actor mesh for multi-agent applications.

Add ``.to_dist()`` to an agent and it runs as an actor on an agent server;
calls return at once with placeholders and the application runs in parallel
by itself. See ``README.md`` and ``docs/guide.md``.
"""

from __future__ import annotations

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING, Any as _Any

from mesh._errors import (
    AgentNotFound,
    AuthenticationError,
    CallTimeout,
    Cancelled,
    CheckpointError,
    DeadlineExceeded,
    MeshError,
    MessageTooLarge,
    OutcomeUnknown,
    RemoteAttributeError,
    RemoteError,
    ResultExpired,
    SerializationError,
    ServerUnavailable,
    StateStoreError,
)

__version__ = "0.1.0"

# The rest of the API is imported on first use (PEP 562): ``python -m mesh.server`` (a plain server,
# the child server) then loads only the serving side, not the client's proxies, futures and placement.
# Every name still reads as before (``mesh.AgentBase``, ``from mesh import Msg``).
_LAZY = {
    "AgentBase": "mesh._agent",
    "delete": "mesh._api", "get": "mesh._api", "init": "mesh._api", "servers": "mesh.client", "shutdown": "mesh._api",
    "cancelled": "mesh._core.cancel", "check_cancelled": "mesh._core.cancel", "deadline": "mesh._core.cancel",
    "time_left": "mesh._core.cancel",
    "MsgHub": "mesh._hub", "msghub": "mesh._hub",
    "Msg": "mesh._msg",
    "DistConf": "mesh._placement",
    "RpcMeta": "mesh._rpc", "async_func": "mesh._rpc", "stream_func": "mesh._rpc", "sync_func": "mesh._rpc",
    "AsyncResult": "mesh.client", "Placeholder": "mesh.client", "RpcObject": "mesh.client", "ServerInfo": "mesh.client",
    "Stream": "mesh.client", "as_completed": "mesh.client", "wait": "mesh.client",
    "AgentServer": "mesh.server", "RpcAgentServerLauncher": "mesh.server",
}

if _TYPE_CHECKING:  # what static checkers see: the same names, imported eagerly
    from mesh._agent import AgentBase
    from mesh._api import delete, get, init, shutdown
    from mesh._core.cancel import cancelled, check_cancelled, deadline, time_left
    from mesh._hub import MsgHub, msghub
    from mesh._msg import Msg
    from mesh._placement import DistConf
    from mesh._rpc import RpcMeta, async_func, stream_func, sync_func
    from mesh.client import AsyncResult, Placeholder, RpcObject, ServerInfo, Stream, as_completed, servers, wait
    from mesh.server import AgentServer, RpcAgentServerLauncher


# True in a ``zmq-agent-server start`` process (set by ``mesh._cli``): there the agents' modules that
# read ``mesh.RpcMeta``, ``mesh.AgentBase``... do not load the client side; it loads when first used
# (a proxy arrives, an agent creates another one). Elsewhere the first such name loads the client side
# at once, so that ``import mesh`` + class definitions pay the imports, not the first ``to_dist()``.
_serving = False


def __getattr__(name: str) -> _Any:
    module = _LAZY.get(name)
    if module is not None:
        if module != "mesh.server":
            # the client side in use: placement, then its lifecycle (``mesh.shutdown`` at exit), in the
            # order the eager package imported them (atexit hooks run in reverse: exiting, shutdown, stop_child)
            if not _serving:
                _importlib.import_module("mesh._placement")
            _importlib.import_module("mesh._api")
            _importlib.import_module("mesh.edge")  # light: registers the HTTP edge's starter with the server host
        # mesh.AgentServer alone loads no edge: it needs the serving machinery (transport, the dispatch),
        # which a process launching a child server never loads; a server started here loads the edge
        # when it serves HTTP (mesh.server._host)
        value = getattr(_importlib.import_module(module), name)
        globals()[name] = value
        return value
    if not name.startswith("__"):  # a submodule not imported yet: mesh.client, mesh._placement, mesh.a2a (extra [http])
        try:
            if name == "client":
                _importlib.import_module("mesh._api")  # the client's lifecycle comes with it
            return _importlib.import_module(f"mesh.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"mesh.{name}":
                raise
    raise AttributeError(f"module 'mesh' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AgentBase",
    "AgentNotFound",
    "AgentServer",
    "AsyncResult",
    "AuthenticationError",
    "CallTimeout",
    "Cancelled",
    "CheckpointError",
    "DeadlineExceeded",
    "DistConf",
    "MeshError",
    "MessageTooLarge",
    "Msg",
    "MsgHub",
    "OutcomeUnknown",
    "Placeholder",
    "RemoteAttributeError",
    "RemoteError",
    "ResultExpired",
    "RpcAgentServerLauncher",
    "RpcMeta",
    "RpcObject",
    "SerializationError",
    "ServerInfo",
    "ServerUnavailable",
    "StateStoreError",
    "Stream",
    "as_completed",
    "async_func",
    "cancelled",
    "check_cancelled",
    "deadline",
    "delete",
    "get",
    "init",
    "msghub",
    "servers",
    "shutdown",
    "stream_func",
    "sync_func",
    "time_left",
    "wait",
]
