"""zmq-agent-mesh: a ZeroMQ peer-to-peer actor mesh for multi-agent applications.

Add ``.to_dist()`` to an agent and it runs as an actor on an agent server;
calls return at once with placeholders and the application runs in parallel
by itself. See ``README.md`` and ``docs/guide.md``.
"""

from mesh._agent import AgentBase
from mesh._api import delete, get, init, servers, shutdown
from mesh._core.cancel import cancelled, check_cancelled, deadline, time_left
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
from mesh._hub import MsgHub, msghub
from mesh._msg import Msg
from mesh._placement import DistConf
from mesh._rpc import RpcMeta, async_func, stream_func, sync_func
from mesh.client import AsyncResult, Placeholder, RpcObject, ServerInfo, Stream, as_completed, wait
from mesh.server import AgentServer, RpcAgentServerLauncher
from mesh import edge as _edge  # noqa: F401, E402  (light: registers the HTTP edge's starter)

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # mesh.a2a (extra [http]) is imported on first use: `import mesh` stays light
    if name == "a2a":
        import importlib

        return importlib.import_module("mesh.a2a")
    raise AttributeError(f"module 'mesh' has no attribute {name!r}")

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
