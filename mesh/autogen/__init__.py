"""AutoGen's distributed agent runtime on the mesh (extra ``zmq-agent-mesh[autogen]``).

Drop-in for ``autogen_ext.runtimes.grpc``::

    from mesh.autogen import MeshWorkerRuntimeHost, MeshWorkerRuntime

``MeshWorkerRuntimeHost(address)`` is where workers meet (a directory, never on the data path);
``MeshWorkerRuntime(host_address)`` is an ``autogen_core.AgentRuntime``: publishes and
``send_message`` go from worker to worker. See ``docs/autogen.md``.
"""

from __future__ import annotations

try:
    import autogen_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "mesh.autogen needs autogen-core: pip install 'zmq-agent-mesh[autogen]' (or 'autogen-core>=0.7,<0.8')"
    ) from exc

from ._errors import MessageSerializationError, UnknownAgentType, WorkerUnavailable
from ._host import MeshWorkerRuntimeHost
from ._worker import MeshWorkerRuntime
from .hub import msghub

__all__ = [
    "MessageSerializationError",
    "MeshWorkerRuntime",
    "MeshWorkerRuntimeHost",
    "UnknownAgentType",
    "WorkerUnavailable",
    "msghub",
]
