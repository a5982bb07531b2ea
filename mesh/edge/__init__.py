"""The HTTP edge of an agent server (extra ``zmq-agent-mesh[http]``; see docs/edge.md).

``AgentServer(http_port=...)`` / ``zmq-agent-server start --http PORT`` serve, from the server's
own process, on a thread and event loop of their own (never the mesh's I/O thread):

* every named agent of the server as an A2A agent (:mod:`mesh.edge._a2a`): its card at
  ``/a2a/NAME/.well-known/agent-card.json``, JSON-RPC at ``/a2a/NAME/`` (A2A 0.3's
  ``message/send`` and ``message/stream``, and 1.0's ``SendMessage`` / ``SendStreamingMessage``);
* ``GET /healthz`` (the server's status as JSON) and ``GET /metrics`` (Prometheus text,
  :mod:`mesh.edge._metrics`);
* behind a bearer token when one is configured (required off loopback), with bounded bodies
  (:mod:`mesh.edge._app`).

This module is light: it registers the edge's starter with the server host. The HTTP libraries
(uvicorn, starlette, a2a-sdk, prometheus-client) are imported only when a server starts HTTP.
"""

from __future__ import annotations

import importlib
from typing import Any

from mesh._core.options import ServerOptions
from mesh.server._dispatch import Servicer
from mesh.server._host import set_http_edge

__all__ = ["start_edge"]

_EXTRA_HINT = 'pip install "zmq-agent-mesh[http]"'


def start_edge(servicer: Servicer, options: ServerOptions, address: str) -> Any:
    """Start the HTTP edge of a server; returns it (``.port``, ``.url``, ``.stop()``).

    Raises:
        ValueError: the [http] extra is not installed, or the edge cannot start (it says why).
    """
    try:
        # late on purpose: the HTTP stack costs ~300 ms to import; servers without HTTP never load it
        server_module = importlib.import_module("mesh.edge._server")
    except ImportError as exc:
        raise ValueError(f"--http needs the [http] extra ({exc.name or exc} is missing): {_EXTRA_HINT}") from None
    return server_module.EdgeServer.start(servicer, options, address)


set_http_edge(start_edge)
