"""zmq-agent-mesh: a ZeroMQ peer-to-peer actor mesh for multi-agent applications.

Add ``.to_dist()`` to an agent and it runs as an actor on an agent server;
calls return at once with placeholders and the application runs in parallel
by itself. See ``README.md`` and ``docs/guide.md``.
"""

from mesh._agent import AgentBase
from mesh._api import init, shutdown
from mesh._discovery import ServerInfo, servers
from mesh._errors import (
    AgentNotFound,
    AuthenticationError,
    CallTimeout,
    MeshError,
    MessageTooLarge,
    RemoteAttributeError,
    RemoteError,
    ResultExpired,
    OutcomeUnknown,
    ServerUnavailable,
)
from mesh._future import AsyncResult, Placeholder
from mesh._meta import DistConf, RpcMeta, async_func, sync_func
from mesh._msg import Msg
from mesh._placement import delete, get
from mesh._proxy import RpcObject
from mesh.server import AgentServer, RpcAgentServerLauncher

__version__ = "0.1.0"

__all__ = [
    "AgentBase",
    "AgentNotFound",
    "AgentServer",
    "AsyncResult",
    "AuthenticationError",
    "CallTimeout",
    "DistConf",
    "MeshError",
    "MessageTooLarge",
    "Msg",
    "Placeholder",
    "RemoteAttributeError",
    "RemoteError",
    "ResultExpired",
    "RpcAgentServerLauncher",
    "RpcMeta",
    "RpcObject",
    "ServerInfo",
    "OutcomeUnknown",
    "ServerUnavailable",
    "async_func",
    "delete",
    "get",
    "init",
    "servers",
    "shutdown",
    "sync_func",
]
