"""The process's mesh lifecycle and lookups: ``init``, ``shutdown``, ``get``, ``delete``, ``servers``."""

from __future__ import annotations

import atexit
import logging
import sys
from typing import TYPE_CHECKING, Any

from mesh._core import runtime, settings as _settings, wire
from mesh._core.address import normalize_address
from mesh._errors import AgentNotFound, MeshError

if TYPE_CHECKING:
    from mesh.client import RpcObject

# Light on purpose: ``zmq-agent-server start`` calls ``init`` and ``shutdown`` and must not load the
# client side for that. ``shutdown`` closes only what this process loaded; ``get`` and ``delete`` import the
# client when called.

__all__ = ["delete", "get", "init", "shutdown"]

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
    if (before.secret, before.connect_timeout, before.heartbeat_timeout) != (
        after.secret, after.connect_timeout, after.heartbeat_timeout
    ):
        rt = runtime.current(create=False)
        if rt is not None and rt.has_routers():
            log.warning("mesh.init changed connection settings while servers run in this process; "
                        "they apply to new connections after mesh.shutdown()")
        else:
            _close_client()
    rt = runtime.current(create=False)
    if rt is not None:
        rt.settings = after  # call_timeout and the like apply to the next call


def shutdown() -> None:
    """Close the mesh in this process: stop the child server, discovery and sockets. Idempotent."""
    placement = sys.modules.get("mesh._placement")
    if placement is not None:
        placement.stop_child()
    selection = sys.modules.get("mesh.client._selection")
    if selection is not None:
        selection.close_browser()
    _close_client()
    redis_results = sys.modules.get("mesh._core.redis_results")
    if redis_results is not None:
        redis_results.close_fetch_clients()


def _close_client() -> None:
    """End the client's session (releases, ``bye``), then close the process's Node."""
    client = sys.modules.get("mesh.client._client")
    if client is not None:
        client.shutdown_client()
    rt = runtime.current(create=False)
    if rt is not None and rt.producers:  # servers of this process still serve on its Node: they keep it
        rt.client_closed = True  # the last of them to stop closes it
        return
    runtime.reset()


def get(name: str, host: str | None = None, port: int | str | None = None, *, timeout: float = 1.0) -> RpcObject:
    """The proxy of the object registered as ``name`` (``to_dist(name=..., detached=True)``).

    Args:
        name: the registered name.
        host, port: the server to ask; ``None`` asks every discovered server.
        timeout: seconds to wait for discovery when no host is given.

    Raises:
        AgentNotFound: no server knows that name.
    """
    from mesh import _placement
    from mesh.client import RpcObject, servers
    from mesh.client._client import get_client
    from mesh.client._replies import decode_reply, wait

    if host is not None:
        addresses = [normalize_address(host, port)]
    else:
        addresses = [s.address for s in servers(timeout=timeout)]
        child = _placement.child()
        if child is not None:
            addresses.append(child.address)
    client = get_client()
    for address in addresses:
        try:
            fut = client.request(address, {"op": wire.LOOKUP, "name": name}, None, timeout=max(timeout, 2.0))
            info = decode_reply(wait(fut, None, address), address)
        except AgentNotFound:
            continue
        except MeshError:
            if host is not None:
                raise
            continue
        durable = info.get("durable")  # a durable object: the proxy follows it when it is restarted
        return RpcObject(address, info["obj"], info["cls"], dict(info["methods"]), info.get("pool"), info.get("inst"),
                         durable if isinstance(durable, dict) else None)
    raise AgentNotFound(f"no object named {name!r} on {', '.join(addresses) or 'any discovered server'}")


def delete(obj: RpcObject) -> None:
    """Delete a remote object now (detached ones included); its queued calls fail with AgentNotFound.

    Raises:
        AgentNotFound: it was already gone.
        TypeError: ``obj`` is not a proxy.
    """
    from mesh import _pipeline
    from mesh.client import RpcObject
    from mesh.client._client import get_client

    if not isinstance(obj, RpcObject):
        raise TypeError(f"mesh.delete takes a remote object (RpcObject), not {type(obj).__name__}")
    try:
        _pipeline.settle(obj)  # a pipelined creation: its answer first (the delete must come after it)
    except MeshError as exc:
        raise AgentNotFound(f"this {obj._mesh_cls} was never created: {exc}") from None
    address = obj._mesh_address
    get_client().call(address, {"op": wire.DELETE, "obj": obj._mesh_id}, None, timeout=10.0)
    if obj._mesh_durable is not None:  # not restarted elsewhere when its next call finds it gone
        from mesh.client import _restart

        _restart.deleted(obj._mesh_id)


def _exiting() -> None:
    cancel = sys.modules.get("mesh.client._cancel")
    if cancel is not None:
        cancel.exiting()


atexit.register(shutdown)
atexit.register(_exiting)  # runs first (last registered): a Ctrl-C exit cancels what it started, then shutdown
