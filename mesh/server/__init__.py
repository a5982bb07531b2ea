"""The serving side: ``AgentServer`` and the rooms of its request handling.

Imports ``mesh._core``, ``mesh._errors``, ``mesh._msg``, ``transport`` and ``discovery``; never
the client side (the process's Node and in-process producers come from ``mesh._core.runtime``).
``python -m mesh.server`` runs the CLI (``__main__``, the one import of the top layer).
"""

from mesh.server._agent_server import AgentServer, RpcAgentServerLauncher

__all__ = ["AgentServer", "RpcAgentServerLauncher"]
