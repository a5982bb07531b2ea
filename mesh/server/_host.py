"""A server hosted in this process: a ROUTER on the process's Node, its timers, its advert.

At shutdown: stop advertising, stop accepting, let running calls finish (``grace``), then keep
the socket open a moment so the last replies leave before it closes.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import time
from typing import Any, Callable

import transport
from mesh._core import runtime
from mesh._core.options import ServerOptions
from mesh.server._classes import ClassResolver, load_agent_dir
from mesh.server._checkpoint import start_scan
from mesh.server._dispatch import Servicer
from mesh.server._hosting import StepGuard
from mesh.server._inline_fast import FastLane
from mesh.server._launcher import client_addresses
from mesh.server._store import make_pool

__all__ = ["Host", "set_http_edge"]

# Starts a server's HTTP edge: (servicer, options, mesh address) -> an object with ``.port``, ``.url``
# and ``.stop()``. Registered by :mod:`mesh.edge` (a layer above this one), which imports its HTTP
# libraries only when it is called: a server without ``http_port`` never loads them.
_http_edge: Callable[[Servicer, ServerOptions, str], Any] | None = None


def set_http_edge(factory: Callable[[Servicer, ServerOptions, str], Any]) -> None:
    """Register what starts a server's HTTP edge (``mesh.edge`` does, on import)."""
    global _http_edge
    _http_edge = factory

log = logging.getLogger("mesh.server")

_REPLY_DRAIN = 0.2  # seconds a server that just answered its last calls stays open before closing


class Host:
    """One in-process server: build it with :meth:`start`, end it with :meth:`stop`."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.servicer: Servicer | None = None
        self.router: transport.Router | None = None
        self.address: str | None = None
        self._advertiser: Any = None
        self._timers: list[Callable[[], None]] = []
        self._runtime: runtime.Runtime | None = None  # whose Node the ROUTER is on
        self._edge: Any = None  # the HTTP edge, when options.http_port is set
        self.http_port: int | None = None

    def start(self, on_stop: Callable[[], None], address_of: Callable[[int], str]) -> tuple[int, str]:
        """Bind and serve; returns ``(port, name)``.

        Raises:
            AgentDirError: a file of ``agent_dir`` failed to import.
            OSError: the address cannot be bound (e.g. in use).
        """
        o = self.options
        resolver = ClassResolver(o.custom_agent_classes, no_code=o.no_code)
        if o.agent_dir:
            for cls in load_agent_dir(o.agent_dir):
                resolver.add(cls)
        name = o.name or f"{socket.gethostname()[:24]}-{os.getpid()}-{os.urandom(2).hex()}"
        pool = make_pool(
            o.pool_type, redis_url=o.redis_url, max_len=o.max_len, max_expire_time=o.max_expire_time,
            name=name, secret=o.secret,
        )
        if hasattr(pool, "ping"):
            try:
                pool.ping()
            except Exception as exc:  # serve anyway: results still reach callers, and Redis may come back
                log.warning("result pool not reachable now (%s): results are not stored until it is", exc)
        servicer = self.servicer = Servicer(
            name=name, capacity=o.capacity, pool=pool, resolver=resolver, max_message_size=o.max_message_size,
            on_stop=on_stop, lease_ttl=o.lease_ttl, pool_url=o.redis_url if o.pool_type == "redis" else None,
            state_store=o.state_store, secret=o.secret,
        )
        try:
            servicer.checkpoints.check()  # a --state-store it cannot write: refused now, not at the first checkpoint
        except Exception:
            servicer.close(0)
            raise
        keys = transport.derive_keys(o.secret) if o.secret else None
        rt = self._runtime = runtime.current()
        node = rt.node
        try:
            self.router = node.add_router(
                o.host, o.port, FastLane(servicer).handle, keys=keys, max_message_size=o.max_message_size,
                on_burst_end=servicer.start_ready,
            )
        except OSError:  # e.g. the address is in use
            servicer.close(0)
            raise
        servicer.io_ident = node.io_ident
        if hasattr(node, "hand_off_io"):
            servicer.calls.node = node  # follows the I/O thread; lets short calls run inline on it
            servicer.calls.aio.hosting = node.host_event_loop  # coroutines on the I/O thread (transport._hosted)
            servicer.calls.aio.guard = StepGuard(servicer.calls)
        servicer.router = self.router
        servicer.streams.call_soon = node.call_soon  # streams push their items from the I/O thread
        port = self.router.port
        self.address = address_of(port)
        servicer.checkpoints.address = client_addresses(o.host, port)[0]  # durable objects' records name it
        start_scan(servicer.checkpoints, o.lease_ttl)
        if o.http_port is not None:
            self._start_edge(servicer)
        rt.producers[self.address] = servicer.local_result  # in-process fetches skip the network
        servicer.workers.prestart()  # the first creation does not wait for a thread to start
        # bound methods kept, so that remove_timer finds the same ones
        self._timers = [servicer.sweep, servicer.expire_early]
        node.add_timer(min(5.0, o.lease_ttl / 3), self._timers[0])
        node.add_timer(0.25, self._timers[1])
        if o.advertise:
            self._start_advertising(name, port)
        return port, name

    def _start_edge(self, servicer: Servicer) -> None:
        """Serve HTTP too (``http_port``); on failure nothing is left bound.

        Raises:
            ValueError: the [http] extra is missing, or the edge cannot start (port in use...).
        """
        try:
            if _http_edge is None:  # a plain `zmq-agent-server start` loads the edge (a layer above) only now
                importlib.import_module("mesh.edge")  # registers itself: set_http_edge
            if _http_edge is None:  # pragma: no cover
                raise ValueError("HTTP serving is not available: import mesh.edge")
            self._edge = _http_edge(servicer, self.options, self.address or "")
        except BaseException:
            self.router.close()  # type: ignore[union-attr]
            servicer.close(0)
            raise
        servicer.http_url = self._edge.url
        self.http_port = self._edge.port

    def _start_advertising(self, name: str, port: int) -> None:
        import discovery  # only a server that advertises loads discovery

        o = self.options
        # Names are made unique (host, pid, random suffix), so mDNS probing, which costs
        # 1.2 s before other hosts can see the server, is skipped; without probing, an IPv4 server
        # is advertised by discovery's plain responder, not zeroconf (~7 MiB less). MESH_REDIS_DISCOVERY_URL also
        # registers it in Redis, for networks without multicast (clients read the same variable).
        redis_url = os.environ.get("MESH_REDIS_DISCOVERY_URL") or None
        ip_version = "all" if ":" in o.host else "v4"  # an IPv6 server is announced over IPv6 mDNS too
        try:
            advertiser = discovery.Advertiser(
                name, o.host, port, capacity=o.capacity, auth=bool(o.secret), probe=False, redis_url=redis_url,
                ip_version=ip_version,
            )
            advertiser.start()
            self._advertiser = advertiser
        except Exception as exc:  # discovery is optional: the server still serves
            log.warning("could not advertise the server: %s", exc)

    def stop(self, grace: float) -> None:
        if self._edge is not None:  # no new HTTP requests; those running end with the calls they made
            try:
                self._edge.stop()
            except Exception as exc:  # pragma: no cover
                log.warning("could not stop the HTTP edge: %s", exc)
        if self._advertiser is not None:
            try:
                self._advertiser.close()
            except Exception as exc:  # pragma: no cover
                log.warning("could not unregister from discovery: %s", exc)
        rt = self._runtime
        if self.address is not None and rt is not None:
            rt.producers.pop(self.address, None)
        if self.servicer is not None:
            for timer in self._timers if rt is not None else ():
                rt.node.remove_timer(timer)
            if self.servicer.close(grace):
                # Replies to the last calls were just queued. Keep the socket open a moment, reading
                # (and refusing) what still comes: a socket closed with unread input resets the
                # connection, and a reset can destroy replies the client has not read yet.
                time.sleep(_REPLY_DRAIN)
        if self.router is not None:
            self.router.close()
        if rt is not None:
            runtime.release_if_unused(rt)  # mesh.shutdown() ran while this server served: now it can close
