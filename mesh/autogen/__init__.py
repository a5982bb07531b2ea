"""AutoGen's distributed agent runtime on the mesh (extra ``zmq-agent-mesh[autogen]``).

Drop-in for ``autogen_ext.runtimes.grpc``::

    from mesh.autogen import MeshWorkerRuntimeHost, MeshWorkerRuntime

``MeshWorkerRuntimeHost(address)`` is where workers meet (a directory, never on the data path);
``MeshWorkerRuntime(host_address)`` is an ``autogen_core.AgentRuntime``: publishes and
``send_message`` go from worker to worker. See ``docs/autogen.md``.
"""

from __future__ import annotations

from typing import Any

from mesh import MsgHub, msghub  # re-exported from mesh (it needs no AutoGen)

_AUTOGEN = {
    "MessageSerializationError": "._errors",
    "UnknownAgentType": "._errors",
    "WorkerUnavailable": "._errors",
    "MeshWorkerRuntimeHost": "._host",
    "MeshWorkerRuntime": "._worker",
}


def __getattr__(name: str) -> Any:  # the AutoGen parts load on first use: msghub works without autogen-core
    module = _AUTOGEN.get(name)
    if module is None:
        raise AttributeError(f"module 'mesh.autogen' has no attribute {name!r}")
    try:
        import autogen_core  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "mesh.autogen needs autogen-core: pip install 'zmq-agent-mesh[autogen]' (or 'autogen-core>=0.7,<0.8')"
        ) from exc
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "MessageSerializationError",
    "MeshWorkerRuntime",
    "MeshWorkerRuntimeHost",
    "MsgHub",
    "UnknownAgentType",
    "WorkerUnavailable",
    "msghub",
]
