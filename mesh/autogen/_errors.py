"""Errors of ``mesh.autogen`` (all are ``mesh.MeshError`` subclasses)."""

from __future__ import annotations

import mesh

__all__ = ["MessageSerializationError", "UnknownAgentType", "WorkerUnavailable"]


class MessageSerializationError(mesh.MeshError, ValueError):
    """A message has no serializer registered in this runtime (also a ``ValueError``, as in AutoGen)."""


class UnknownAgentType(mesh.AgentNotFound, LookupError):
    """No worker in the mesh registered that agent type (also a ``LookupError``, as in AutoGen)."""


class WorkerUnavailable(mesh.ServerUnavailable):
    """The worker that holds the recipient died, froze or left before it answered."""
