"""The serving side: ``AgentServer`` and the rooms of its request handling.

Imports ``mesh._core``, ``mesh._errors``, ``transport`` and ``discovery``; never the client side
(three edges remain, marked ``TODO(layers)``, until the client restructure gives the process's
Node and in-process producers a home in ``mesh._core.runtime``). ``python -m mesh.server``
runs the CLI (``__main__``).
"""

from mesh.server._agent_server import AgentServer, RpcAgentServerLauncher

__all__ = ["AgentServer", "RpcAgentServerLauncher"]
