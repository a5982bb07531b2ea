"""Advertiser: announce one server on every enabled channel (mDNS, local registry, Redis)."""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path
from types import TracebackType

from typing import Any

from discovery._hosts import ip_version_name, is_loopback, is_wildcard, resolve_host
from discovery._ifconf import plain_plan
from discovery._local import LocalRegistry
from discovery._record import (
    PROTO_VERSION,
    ServerRecord,
    instance_label,
    python_version,
    resolve_service_type,
    txt_properties,
)
from discovery._redis import DEFAULT_PREFIX, RedisPublisher

__all__ = ["Advertiser"]

log = logging.getLogger(__name__)

_MAX_NAME = 63  # bytes: one DNS label


def _plain_plan(host: str, interfaces: list[str] | None) -> tuple[list[str], list[tuple[int, str]]] | None:
    """The plain responder's addresses and interfaces, or ``None``: zeroconf advertises instead.

    ``MESH_MDNS_RESPONDER=zeroconf`` always chooses zeroconf.
    """
    if os.environ.get("MESH_MDNS_RESPONDER", "").strip().lower() == "zeroconf":
        return None
    from discovery._responder import available

    return plain_plan(host, interfaces) if available() else None


class Advertiser:
    """Announce a server so that :class:`~discovery.Browser` finds it.

    ``start()`` returns quickly: the local registry entry and the Redis key are
    written at once, while mDNS registration (1.2-1.6 s of probing) runs in the
    background. Every failure of a channel (no multicast, Redis down, registry
    not writable) is logged and leaves the other channels working.

    Interfaces used for mDNS: ``interfaces``, else ``MESH_INTERFACES`` (comma
    separated addresses or interface names), else derived from ``host``: loopback
    -> ``127.0.0.1`` only, a specific address -> that address, a wildcard
    (``0.0.0.0``) -> all interfaces, advertising all their addresses.

    Args:
        name: unique server instance name, at most 63 bytes (``""``: one is made up
            from the host name, pid and port).
        host: the address the server binds (``0.0.0.0`` for all).
        port: the TCP port it listens on.
        capacity: how many objects it accepts.
        auth: it requires a shared secret.
        mdns: advertise over mDNS.
        local: write a local registry entry (same-host discovery without multicast).
        redis_url: also keep a key in this Redis (needs the ``redis`` package).
        interfaces: mDNS interfaces (see above).
        ip_version: ``"v4"`` (default), ``"v6"`` or ``"all"``: the mDNS transport.
        service_type: DNS-SD type; default ``MESH_SERVICE_TYPE`` or ``SERVICE_TYPE``.
        redis_ttl: seconds the Redis key lives without a refresh (refreshed every third).
        probe: probe the mDNS name before announcing (RFC 6762; ~1.2 s). ``False``
            announces at once but cannot notice a duplicate name; over IPv4 on Linux it also
            advertises with the plain responder of :mod:`discovery._responder` instead of
            zeroconf (~7 MiB less; ``MESH_MDNS_RESPONDER=zeroconf`` keeps zeroconf).
        registry_dir: local registry directory (default: ``MESH_REGISTRY_DIR`` or the
            per-user, per-network-namespace directory).
        redis_prefix: Redis key prefix.
        proto: wire protocol major version to advertise.

    Raises:
        ValueError: a bad name, port, ``ip_version``, service type or host.
        ImportError: ``redis_url`` is given and the ``redis`` package is missing.
    """

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        *,
        capacity: int = 0,
        auth: bool = False,
        mdns: bool = True,
        local: bool = True,
        redis_url: str | None = None,
        interfaces: list[str] | None = None,
        ip_version: str = "v4",
        service_type: str | None = None,
        redis_ttl: float = 10.0,
        probe: bool = True,
        registry_dir: str | os.PathLike[str] | None = None,
        redis_prefix: str = DEFAULT_PREFIX,
        proto: int = PROTO_VERSION,
    ) -> None:
        # Long only by its keyword list (20 lines): the checks and derived records read best in one place.
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise ValueError(f"port must be an int in 1..65535, not {port!r}")
        if not name:
            name = f"{socket.gethostname().split('.')[0][:40]}-{os.getpid()}-{port}"
        if len(name.encode()) > _MAX_NAME:
            raise ValueError(f"server name {name!r} is longer than {_MAX_NAME} bytes")
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, not {capacity!r}")
        version_name = ip_version_name(ip_version)
        self.service_type = resolve_service_type(service_type)
        bound = resolve_host(host.strip())
        plan = _plain_plan(bound, interfaces) if mdns and not probe and version_name == "v4" else None
        if plan is not None:
            addresses, plain_ifaces = plan
        else:  # zeroconf's interface choices (IPv6, probing, or no plain responder here)
            from discovery._net import advertised_addresses, advertiser_interfaces, to_ip_version

            version = to_ip_version(version_name)
            spec = advertiser_interfaces(bound, interfaces, version)
            addresses = advertised_addresses(bound, spec, version)
        if not addresses:
            raise ValueError(f"no address to advertise for host {host!r} on interfaces {interfaces!r}")
        routable = [a for a in addresses if not is_loopback(a.split("%")[0])]
        if is_wildcard(bound):
            # Same host: loopback always works. Elsewhere: the first routable address.
            local_host = "::1" if bound.strip() in ("::", "[::]") else "127.0.0.1"
            shared_host = (routable or addresses)[0]
        else:
            local_host = shared_host = "127.0.0.1" if bound == "localhost" else bound

        def record(host_: str) -> ServerRecord:
            return ServerRecord(
                name=name,
                host=host_,
                port=port,
                capacity=capacity,
                auth=auth,
                py=python_version(),
                proto=proto,
                pid=os.getpid(),
                addresses=tuple(dict.fromkeys([host_, *addresses])),
            )

        self.name = name
        self.record = record(shared_host)
        """What is advertised (over mDNS and Redis; the local entry has a loopback host for wildcards)."""
        self._local_record = record(local_host)
        self._mdns: Any = None
        if mdns and plan is not None:
            from discovery._responder import MdnsResponder

            current = (lambda: _plain_plan(bound, interfaces)) if is_wildcard(bound) else None
            self._mdns = MdnsResponder(
                self.service_type, instance_label(name), port, txt_properties(self.record), addresses, plain_ifaces,
                current,
            )
        elif mdns:
            from discovery._mdns import MdnsAdvertiser

            follow = (lambda: advertised_addresses(bound, spec, version)) if is_wildcard(bound) else None
            self._mdns = MdnsAdvertiser(
                self.service_type, self.record, addresses, spec, version, probe=probe, current_addresses=follow
            )
        self._local = LocalRegistry(registry_dir) if local else None
        self._redis = RedisPublisher(redis_url, self.record, redis_ttl, redis_prefix) if redis_url else None
        self._local_path: Path | None = None
        self._lock = threading.Lock()
        self._state = "new"  # -> "started" -> "closed"

    @property
    def mdns_name(self) -> str | None:
        """The mDNS instance name (after a rename on conflict), or ``None`` without mDNS."""
        return self._mdns.name if self._mdns is not None else None

    def start(self) -> None:
        """Publish on every enabled channel; mDNS registration continues in the background.

        A second call does nothing.

        Raises:
            RuntimeError: the advertiser was closed.
        """
        with self._lock:
            if self._state == "closed":
                raise RuntimeError("Advertiser is closed")
            if self._state == "started":
                return
            self._state = "started"
            if self._local is not None:
                try:
                    self._local_path = self._local.publish(self._local_record)
                except OSError as exc:
                    log.warning("could not write the local registry entry in %s: %s", self._local.directory, exc)
            if self._redis is not None:
                self._redis.start()
            if self._mdns is not None:
                self._mdns.start()

    def wait_registered(self, timeout: float | None = None) -> bool:
        """Wait until the mDNS registration has finished probing and answers queries.

        Args:
            timeout: seconds to wait at most (``None``: until done or failed).

        Returns:
            True once registered; False on timeout, failure, or without mDNS.
        """
        mdns = self._mdns
        if mdns is None or self._state != "started":
            return False
        mdns.settled.wait(timeout)
        return mdns.registered.is_set()

    def wait_announced(self, timeout: float | None = None) -> bool:
        """Wait until the announcements that follow mDNS registration have been sent.

        Args:
            timeout: seconds to wait at most (``None``: until done, failed or closed).

        Returns:
            True once announced; False on timeout, failure, or without mDNS.
        """
        mdns = self._mdns
        if mdns is None or self._state != "started":
            return False
        mdns.finished.wait(timeout)  # set after the announcements (0.45 s after registration), or on failure
        return mdns.announced.is_set()

    def close(self) -> None:
        """Withdraw from every channel: local entry removed, Redis key deleted, mDNS goodbye sent.

        Joins the threads it started. Idempotent.
        """
        with self._lock:
            if self._state == "closed":
                return
            self._state = "closed"
        if self._local is not None and self._local_path is not None:
            self._local.withdraw(self._local_path)
            self._local_path = None
        if self._redis is not None:
            self._redis.close()
        if self._mdns is not None:
            self._mdns.close()

    def __enter__(self) -> Advertiser:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Advertiser {self.name} {self.record.address} {self._state}>"
