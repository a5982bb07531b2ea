"""``mesh.init`` and ``mesh.shutdown``."""

from __future__ import annotations

import atexit
import logging
from typing import Any

from mesh import _settings
from mesh._core import redis_results
from mesh._client import shutdown_client

__all__ = ["init", "shutdown"]

log = logging.getLogger("mesh")

# AgentScope's init() takes these; a migrated application may still pass them.
_AGENTSCOPE_ARGS = {"model_configs", "project", "name", "save_dir", "save_log", "save_code",
                    "save_api_invoke", "use_monitor", "logger_level", "studio_url", "runtime_id"}


def init(**settings: Any) -> None:
    """Set process-wide settings (optional; environment variables give the defaults).

    Args:
        secret: shared secret (str or bytes) for servers that require one.
        call_timeout: default timeout of sync calls, seconds.
        connect_timeout: how long a call waits for a connection, seconds.
        heartbeat_timeout: a silent server is declared dead after this long, seconds.
        discovery: find servers on the LAN in ``to_dist()`` (default True).
        discovery_wait: seconds the first ``to_dist()`` waits for discovery.
        child_capacity: worker threads of the child server.

    AgentScope's own ``init`` arguments (``model_configs``, ``project``...)
    are accepted and ignored, so migrated code runs unchanged.

    Raises:
        TypeError: an unknown setting.
    """
    ignored = {k for k in settings if k in _AGENTSCOPE_ARGS}
    if ignored:
        log.info("mesh.init ignores AgentScope arguments: %s", ", ".join(sorted(ignored)))
    wanted = {k: v for k, v in settings.items() if k not in ignored}
    before = _settings.current()
    after = _settings.update(**wanted)
    from mesh import _client

    if (before.secret, before.connect_timeout, before.heartbeat_timeout) != (
        after.secret, after.connect_timeout, after.heartbeat_timeout
    ):
        if _client._client is not None and _client._client.node._routers:
            log.warning("mesh.init changed connection settings while servers run in this process; "
                        "they apply to new connections after mesh.shutdown()")
        else:
            shutdown_client()
    live = _client._client
    if live is not None:
        live.settings = after  # call_timeout and the like apply to the next call


def shutdown() -> None:
    """Close the mesh in this process: stop the child server, discovery and sockets. Idempotent."""
    from mesh._discovery import close_browser
    from mesh._placement import stop_child

    stop_child()
    close_browser()
    shutdown_client()
    redis_results.close_fetch_clients()


atexit.register(shutdown)
