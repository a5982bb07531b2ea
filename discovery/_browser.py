"""Browser: the merged table of servers from mDNS, the local registry, static peers, DNS and Redis."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any

from discovery._dns import split_dns_entries
from discovery._hosts import ip_version_name, ipv4_addresses, pick_host
from discovery._local import LocalRegistry
from discovery._merge import merge
from discovery._probe import Probe
from discovery._record import ServerRecord, resolve_service_type
from discovery._redis import DEFAULT_PREFIX, RedisScanner
from discovery._static import peers_from_env, static_records

if TYPE_CHECKING:
    from discovery._mdns_browser import MdnsBrowser

__all__ = ["Browser"]

log = logging.getLogger(__name__)

_PULL_INTERVAL = 0.05  # s: how often wait() re-reads the sources that cannot notify (local files, Redis)
_PROBE_WINDOW = 1.0  # s: a probe_first browser starts zeroconf this long after an unanswered probe


def _default_predicate(found: list[ServerRecord]) -> bool:
    return bool(found)


class Browser:
    """Find servers: one record per server, merged from every enabled source.

    mDNS is followed in the background once :meth:`start` is called; the local
    registry, static peers and Redis are read on each :meth:`servers` call (Redis
    at most once per second). Records are hints: check liveness before relying
    on one.

    Args:
        mdns: browse mDNS.
        local: read the local registry (servers on this host, no multicast needed).
        static_peers: fixed ``host:port`` addresses, and names to look up in DNS
            (``dns:NAME[:PORT]``, ``dns+srv:NAME``: see :mod:`discovery._dns`); ``None``
            reads ``MESH_PEERS`` (comma separated).
        redis_url: also read this Redis registry; ``None`` reads
            ``MESH_REDIS_DISCOVERY_URL`` when set.
        interfaces: mDNS interfaces (addresses or names); default ``MESH_INTERFACES``,
            else all.
        ip_version: ``"v4"`` (default), ``"v6"`` or ``"all"``: the mDNS transport.
        service_type: DNS-SD type; default ``MESH_SERVICE_TYPE`` or ``SERVICE_TYPE``.
        registry_dir: local registry directory (default as for the advertiser).
        redis_prefix: Redis key prefix.
        probe_first: ask with a plain one-shot query first (:mod:`discovery._probe`) and start
            zeroconf only once it is answered, or in the background a second later when nobody
            answered: a first look that finds nothing does not pay zeroconf's import and start.

    Raises:
        ValueError: a bad static peer (the message names it), ``ip_version`` or service type.
        ImportError: ``redis_url`` is given and the ``redis`` package is missing (when the
            URL comes from ``MESH_REDIS_DISCOVERY_URL`` instead, this is logged and Redis skipped).
    """

    def __init__(
        self,
        *,
        mdns: bool = True,
        local: bool = True,
        static_peers: Sequence[str] | None = None,
        redis_url: str | None = None,
        interfaces: list[str] | None = None,
        ip_version: str = "v4",
        service_type: str | None = None,
        registry_dir: str | os.PathLike[str] | None = None,
        redis_prefix: str = DEFAULT_PREFIX,
        probe_first: bool = False,
    ) -> None:
        self._ip = ip_version_name(ip_version)
        self.service_type = resolve_service_type(service_type)
        origin = "MESH_PEERS" if static_peers is None else "static_peers"
        plain, self._dns = split_dns_entries(peers_from_env() if static_peers is None else static_peers, origin)
        self._static = static_records(plain, origin=origin)
        self._local = LocalRegistry(registry_dir) if local else None
        self._redis: RedisScanner | None = None
        if redis_url is not None:
            self._redis = RedisScanner(redis_url, redis_prefix)
        elif os.environ.get("MESH_REDIS_DISCOVERY_URL"):
            try:
                self._redis = RedisScanner(os.environ["MESH_REDIS_DISCOVERY_URL"], redis_prefix)
            except ImportError as exc:
                log.error("MESH_REDIS_DISCOVERY_URL is set but ignored: %s", exc)
        self._want_mdns = mdns
        self._mdns: MdnsBrowser | None = None
        self._mdns_lock = threading.Lock()  # starting zeroconf (a probe's thread) vs closing
        self._probe: Probe | None = None
        self._probe_from: list[str] | None = None  # addresses a probe asks from (None: every IPv4 one)
        self._interfaces: Any = None  # zeroconf's interface choice, once known
        self._probe_first = mdns and probe_first and self._ip == "v4"  # (the probe asks over IPv4 only)
        if mdns and (not self._probe_first or interfaces is not None or os.environ.get("MESH_INTERFACES", "").strip()):
            # chosen interfaces are checked now (a bad one raises here), which needs zeroconf's types
            from discovery._net import browser_interfaces, to_ip_version

            self._interfaces = browser_interfaces(interfaces, to_ip_version(self._ip))
            self._probe_from = list(self._interfaces) if isinstance(self._interfaces, list) else None
            if not self._probe_first:
                self._mdns = self._new_mdns()
        self._cond = threading.Condition()
        self._generation = 0  # bumped on every pushed change (mDNS); wait() sleeps until it moves
        self._state = "new"  # -> "started" -> "closed"
        self._listeners: list[Callable[[], None]] = []
        self._started_at: float | None = None

    def _new_mdns(self) -> MdnsBrowser:
        from discovery._mdns_browser import MdnsBrowser  # zeroconf: imported by the first browser that needs it
        from discovery._net import browser_interfaces, to_ip_version

        version = to_ip_version(self._ip)
        if self._interfaces is None:
            self._interfaces = browser_interfaces(None, version)
        return MdnsBrowser(self.service_type, self._interfaces, version, self._changed)

    def _start_mdns(self, heard: bool = True) -> None:
        """Start zeroconf (a probe_first browser: from the probe's thread, answered or not)."""
        with self._mdns_lock:
            if self._state == "closed" or self._mdns is not None:
                return
            try:
                self._mdns = self._new_mdns()
            except Exception as exc:  # noqa: BLE001 - mDNS is one source of several: the others go on
                log.warning("mDNS browsing %s unavailable: %s", self.service_type, exc)
                return
            if not heard:
                log.debug("mDNS probe for %s unanswered: browsing in the background", self.service_type)
            self._mdns.start()
        self._changed()

    def _changed(self) -> None:  # from zeroconf threads: must not block
        with self._cond:
            self._generation += 1
            self._cond.notify_all()
            listeners = list(self._listeners)
        for fn in listeners:
            try:
                fn()
            except Exception:  # a listener's bug must not end a zeroconf thread
                log.exception("discovery listener failed")

    def add_listener(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` (from a zeroconf thread: it must not block) whenever mDNS reports a change.

        The local registry, static peers and Redis do not notify: re-read :meth:`servers`.
        """
        with self._cond:
            self._listeners.append(fn)

    def start(self) -> None:
        """Start following mDNS in the background. A second call does nothing.

        Raises:
            RuntimeError: the browser was closed.
        """
        with self._cond:
            if self._state == "closed":
                raise RuntimeError("Browser is closed")
            if self._state == "started":
                return
            self._state = "started"
            self._started_at = time.monotonic()
        if self._probe_first:
            from_ = self._probe_from if self._probe_from is not None else ipv4_addresses()
            if from_ is None:  # no cheap interface list here: zeroconf at once
                self._start_mdns()
                return
            self._probe = Probe(self.service_type, from_, _PROBE_WINDOW, self._start_mdns)
            self._probe.start()
        elif self._mdns is not None:
            self._mdns.start()

    def asked_at(self) -> float | None:
        """When (``time.monotonic()``) mDNS sent its first query; answers on a LAN come within
        milliseconds of it. ``None`` while not sent yet; the start time when mDNS is off. With
        ``probe_first``: the probe's, then ``None`` once it is answered until zeroconf has asked."""
        if not self._want_mdns:
            return self._started_at
        mdns = self._mdns
        if mdns is not None:
            return mdns.query_sent
        probe = self._probe
        if probe is None or probe.heard:
            return None  # not asked yet, or answered: zeroconf starts and asks again
        return probe.sent_at

    def servers(self) -> list[ServerRecord]:
        """The servers known now, one record per server, sorted by name.

        After :meth:`close`, only the local registry and static peers are listed.
        Never raises for an unavailable source (mDNS down, Redis down): that source
        is simply empty, and a warning is logged.
        """
        found: list[ServerRecord] = []
        mdns = self._mdns
        if mdns is not None:
            found += mdns.records()
        if self._local is not None:
            found += self._local.records()
        found += self._static
        for source in self._dns:  # looked up again at most once a second
            found += source.records()
        if self._redis is not None and self._state != "closed":
            prefer_v6 = self._ip == "v6"
            for rec in self._redis.records():
                # The advertiser guessed a host for everyone; pick the one reachable from here.
                found.append(replace(rec, host=pick_host(rec.addresses, prefer_v6)) if rec.addresses else rec)
        return merge(found)

    def wait(
        self, timeout: float, predicate: Callable[[list[ServerRecord]], bool] | None = None
    ) -> list[ServerRecord]:
        """Wait until ``predicate(servers())`` is true, or ``timeout`` seconds pass.

        mDNS changes wake the wait at once; the local registry and Redis are
        re-read every 50 ms while waiting. Starts the browser if needed.

        Args:
            timeout: seconds to wait at most.
            predicate: the condition on the server list; default: at least one server.

        Returns:
            :meth:`servers` at the moment the predicate held or time ran out.
        """
        if self._state == "new":
            self.start()
        predicate = predicate or _default_predicate
        deadline = time.monotonic() + max(0.0, timeout)
        pull = self._local is not None or self._redis is not None or bool(self._dns)
        while True:
            with self._cond:
                generation = self._generation
            found = self.servers()
            remaining = deadline - time.monotonic()
            if predicate(found) or remaining <= 0 or self._state == "closed":
                return found
            with self._cond:
                if self._generation == generation and self._state != "closed":
                    self._cond.wait(min(remaining, _PULL_INTERVAL) if pull else remaining)

    def close(self) -> None:
        """Stop browsing: zeroconf closed, its threads joined, Redis disconnected. Idempotent."""
        with self._cond:
            if self._state == "closed":
                return
            self._state = "closed"
            self._cond.notify_all()
        if self._probe is not None:
            self._probe.close()
        with self._mdns_lock:  # (a probe's thread may be starting zeroconf: it finishes first)
            mdns = self._mdns
        if mdns is not None:
            mdns.close()
        if self._redis is not None:
            self._redis.close()

    def __enter__(self) -> Browser:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Browser {self.service_type} {self._state}>"
