"""Browsing mDNS: follow the services of one type through a zeroconf ``ServiceBrowser``.

Browse handlers never block: a record missing from the cache is requested by a
task on the zeroconf loop. A fresh browser also sends a one-shot query
(:mod:`discovery._oneshot`), so it hears from every server within milliseconds;
after a network change it asks again.

Questions are QM (multicast answers), never QU: several processes on one host
share port 5353 with ``SO_REUSEPORT``, and the kernel hands a unicast answer to
only one of them, often not the one that asked. Measured on a virtual LAN, with
zeroconf's default QU first query, a fresh browser on a host where another
browser ran found nothing within 1 s in 3 tries of 4.

mDNS results are hints: after a crash (no goodbye) records linger for minutes.
:meth:`MdnsBrowser.records` rebuilds each record from the cache at every call,
so a service whose SRV or address records expired is no longer listed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from zeroconf import DNSQuestionType, IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceInfo

from discovery._mdns import CLOSE_TIMEOUT, open_zeroconf
from discovery._net import InterfaceSpec, local_addresses, pick_host
from discovery._netwatch import NetWatch
from discovery._oneshot import one_shot_query
from discovery._record import PROTO_VERSION, ServerRecord

__all__ = ["MdnsBrowser", "record_from_info"]

log = logging.getLogger(__name__)

_RESOLVE_TIMEOUT_MS = 3000


def _int(props: dict[str, str | None], key: str, default: int) -> int:
    try:
        return int(props.get(key) or default)
    except ValueError:
        return default


def record_from_info(info: ServiceInfo, prefer_v6: bool = False) -> ServerRecord | None:
    """A :class:`ServerRecord` from a resolved ``ServiceInfo`` (``None`` if it has no address or port)."""
    addresses = info.parsed_scoped_addresses(IPVersion.All)
    if not addresses or not info.port:
        return None
    props = info.decoded_properties
    label = info.name[: -len(info.type) - 1] if info.name.endswith("." + info.type) else info.name
    return ServerRecord(
        name=props.get("name") or label,
        host=pick_host(addresses, prefer_v6=prefer_v6),
        port=info.port,
        capacity=_int(props, "cap", 0),
        auth=props.get("auth") == "1",
        py=props.get("py") or "",
        proto=_int(props, "proto", PROTO_VERSION),
        pid=_int(props, "pid", 0),
        addresses=tuple(addresses),
        sources=frozenset({"mdns"}),
    )


class MdnsBrowser:
    """Follow the services of one type.

    Args:
        service_type: e.g. ``_agentmesh._tcp.local.``.
        interfaces: where to listen and query.
        version: IP versions zeroconf uses.
        on_change: called (from a zeroconf thread, must not block) when the set changes.
    """

    def __init__(
        self,
        service_type: str,
        interfaces: InterfaceSpec,
        version: IPVersion,
        on_change: Callable[[], None],
    ) -> None:
        self.service_type = service_type
        self._interfaces = interfaces
        self._version = version
        self._on_change = on_change
        self._lock = threading.Lock()
        self._names: set[str] = set()
        self._resolving: dict[str, asyncio.Task[bool]] = {}  # touched on the zeroconf loop only
        self._zc: Zeroconf | None = None
        self._browser: ServiceBrowser | None = None
        self._requery_task: asyncio.Task[None] | None = None  # touched on the zeroconf loop only
        self._watch = NetWatch(self._network_changed, name=service_type.split(".")[0])
        self.query_sent: float | None = None  # monotonic time the first one-shot query went out

    def _sent(self) -> None:
        if self.query_sent is None:
            self.query_sent = time.monotonic()

    def start(self) -> None:
        """Open zeroconf and start browsing (an ``OSError`` is logged, not raised)."""
        zc = open_zeroconf(self._interfaces, self._version, f"browsing {self.service_type}")
        if zc is None:
            self._sent()  # nothing will be asked: nothing to wait for
            return
        try:
            self._browser = ServiceBrowser(
                zc, [self.service_type], handlers=[self._on_event], question_type=DNSQuestionType.QM
            )
        except (OSError, RuntimeError) as exc:
            log.warning("mDNS browsing %s failed to start: %s", self.service_type, exc)
            zc.close()
            self._sent()
            return
        self._zc = zc
        assert zc.loop is not None
        zc.loop.call_soon_threadsafe(self._spawn_requery, zc, False)
        self._watch.start()

    def _network_changed(self) -> None:  # on the NetWatch thread
        zc = self._zc
        if zc is None or zc.loop is None:
            return
        with contextlib.suppress(RuntimeError):  # loop closed: we are closing
            zc.loop.call_soon_threadsafe(self._spawn_requery, zc, True)

    def _spawn_requery(self, zc: Zeroconf, rescan: bool) -> None:  # on the zeroconf loop
        if zc.done or (self._requery_task is not None and not self._requery_task.done()):
            return
        assert zc.loop is not None
        self._requery_task = zc.loop.create_task(self._requery(zc, rescan))

    def _query_addresses(self) -> list[str]:
        if self._version is IPVersion.V6Only:
            return []
        if isinstance(self._interfaces, list):
            return [a for a in self._interfaces if ":" not in a]
        return local_addresses(IPVersion.V4Only)

    async def _requery(self, zc: Zeroconf, rescan: bool) -> None:  # on the zeroconf loop
        """Ask with a one-shot query; after a network change, re-join interfaces first.

        Services announced while our link was down were never heard, and the
        ServiceBrowser stops asking by itself after its startup queries.
        """
        if rescan:
            update = getattr(zc, "async_update_interfaces", None)  # zeroconf >= 0.150
            if update is not None:
                with contextlib.suppress(Exception):
                    await update()
            log.debug("mDNS: network changed, querying %s again", self.service_type)
        if not zc.done:
            await one_shot_query(zc, self.service_type, self._query_addresses(), on_sent=self._sent)

    def _on_event(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:  # on the ServiceBrowser thread: must not block
        if state_change is ServiceStateChange.Removed:
            with self._lock:
                self._names.discard(name)
            self._on_change()
            return
        try:
            cached = ServiceInfo(service_type, name).load_from_cache(zeroconf)
        except Exception as exc:  # a foreign responder's odd name must not end the ServiceBrowser thread
            log.debug("ignoring mDNS service %r: %r", name, exc)
            return
        with self._lock:
            self._names.add(name)
        if cached:
            self._on_change()
        elif zeroconf.loop is not None and not zeroconf.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed under us
                zeroconf.loop.call_soon_threadsafe(self._spawn_resolve, zeroconf, service_type, name)

    def _spawn_resolve(self, zc: Zeroconf, service_type: str, name: str) -> None:  # on the zeroconf loop
        if name in self._resolving or zc.done:
            return
        info = AsyncServiceInfo(service_type, name)
        task = zc.loop.create_task(info.async_request(zc, _RESOLVE_TIMEOUT_MS, DNSQuestionType.QM))  # type: ignore[union-attr]
        self._resolving[name] = task

        def done(t: asyncio.Task[bool]) -> None:
            self._resolving.pop(name, None)
            if not t.cancelled() and t.exception() is None and t.result():
                self._on_change()

        task.add_done_callback(done)

    async def _cancel_tasks(self) -> None:  # on the zeroconf loop
        tasks: list[asyncio.Task[Any]] = list(self._resolving.values())
        if self._requery_task is not None:
            tasks.append(self._requery_task)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def records(self) -> list[ServerRecord]:
        """Services whose SRV, TXT and address records are all in the cache now."""
        zc = self._zc
        if zc is None:
            return []
        with self._lock:
            names = sorted(self._names)
        out = []
        prefer_v6 = self._version is IPVersion.V6Only
        for name in names:
            try:
                info = ServiceInfo(self.service_type, name)
                rec = record_from_info(info, prefer_v6) if info.load_from_cache(zc) else None
            except Exception as exc:  # malformed records from a foreign responder
                log.debug("ignoring mDNS service %r: %r", name, exc)
                continue
            if rec is not None:
                out.append(rec)
        return out

    def close(self) -> None:
        """Stop browsing and close zeroconf (joins its threads). Idempotent."""
        self._watch.close()
        zc, self._zc = self._zc, None
        browser, self._browser = self._browser, None
        if browser is not None:
            browser.cancel()
        if zc is None:
            return
        try:
            if zc.loop is not None and zc.loop.is_running():
                asyncio.run_coroutine_threadsafe(self._cancel_tasks(), zc.loop).result(CLOSE_TIMEOUT)
        except Exception as exc:  # pragma: no cover - closing must go on
            log.debug("cancelling mDNS lookups failed: %r", exc)
        finally:
            zc.close()
            with self._lock:
                self._names.clear()
