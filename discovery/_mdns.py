"""mDNS / DNS-SD through python-zeroconf: the records, and advertising one server.

Records, for instance ``<name>._agentmesh._tcp.local.``:

- PTR ``_agentmesh._tcp.local.`` -> the instance;
- SRV -> port and a host name unique to the instance, whose A/AAAA records carry
  every address the server binds (the endpoint lives there, never in TXT);
- TXT, small and static: ``txtvers=1``, ``proto``, ``name``, ``cap``,
  ``auth`` (0/1), ``py``, ``pid``.

Both sides (this module and :mod:`discovery._mdns_browser`) use the sync
``Zeroconf`` with its own event-loop thread (``use_asyncio=False``, so this also
works when the caller runs asyncio). Registration (probing, 1.2-1.6 s, then
three announcements) runs as a task on that loop; closing cancels it if still
running and sends goodbyes (TTL 0) for whatever was registered, so no
announcement can follow a goodbye. When a network link comes up, a registered
service announces itself again (see :mod:`discovery._netwatch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

from zeroconf import IPVersion, NonUniqueNameException, ServiceInfo, Zeroconf

from discovery._net import InterfaceSpec
from discovery._netwatch import NetWatch
from discovery._record import ServerRecord, instance_label, txt_properties

__all__ = ["CLOSE_TIMEOUT", "MdnsAdvertiser", "instance_label", "open_zeroconf", "txt_properties"]

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 5.0  # s; goodbyes take 0.25 s


def open_zeroconf(interfaces: InterfaceSpec, version: IPVersion, what: str) -> Zeroconf | None:
    """A ``Zeroconf`` on its own loop thread, or ``None`` (with a warning) when the network refuses."""
    try:
        zc = Zeroconf(interfaces=interfaces, ip_version=version, use_asyncio=False)
    except (OSError, RuntimeError, ValueError) as exc:
        # OSError: no such device, multicast unsupported; RuntimeError: no interface has an address.
        log.warning("mDNS %s unavailable on %s: %s; other discovery sources keep working", what, interfaces, exc)
        return None
    if not getattr(zc.engine, "senders", True):  # filled before Zeroconf() returns (own loop thread)
        log.warning("mDNS %s: no interface of %s accepted multicast; nobody will hear it", what, interfaces)
    return zc


class MdnsAdvertiser:
    """Register one service; :meth:`close` withdraws it with goodbye packets.

    Args:
        service_type: e.g. ``_agentmesh._tcp.local.``.
        record: what to advertise (name, port and the TXT fields).
        addresses: the addresses for the A/AAAA records.
        interfaces: where to multicast.
        version: IP versions zeroconf uses.
        probe: probe for name conflicts first (RFC 6762 §8.1; about 1.2 s). Without
            probing, announcements start at once, but a duplicate name goes unnoticed.
        current_addresses: returns the addresses to advertise now; called after a
            network change (a server bound to ``0.0.0.0`` follows its interfaces).
    """

    def __init__(
        self,
        service_type: str,
        record: ServerRecord,
        addresses: list[str],
        interfaces: InterfaceSpec,
        version: IPVersion,
        probe: bool = True,
        current_addresses: Callable[[], list[str]] | None = None,
    ) -> None:
        label = instance_label(record.name)
        self.info = ServiceInfo(
            service_type,
            f"{label}.{service_type}",
            port=record.port,
            properties=txt_properties(record),
            parsed_addresses=[a.split("%")[0] for a in addresses],  # the receiver knows its own scope
        )
        self._interfaces = interfaces
        self._version = version
        self._probe = probe
        self._current_addresses = current_addresses
        self._zc: Zeroconf | None = None
        self._task: asyncio.Task[None] | None = None
        self._refresh: asyncio.Task[None] | None = None
        self._watch = NetWatch(self._network_changed, name=label)
        self.registered = threading.Event()
        """Set once probing is over and the records answer queries."""
        self.settled = threading.Event()
        """Set once registration succeeded, failed or was cancelled."""
        self.announced = threading.Event()
        """Set once the three announcements after registration went out."""
        self.finished = threading.Event()
        """Set once registration and announcements are over, whatever the outcome."""

    @property
    def name(self) -> str:
        """The instance name (after a rename on conflict)."""
        return str(self.info.name)

    def start(self) -> None:
        """Open zeroconf and start registering in the background (an ``OSError`` is logged, not raised)."""
        self._zc = open_zeroconf(self._interfaces, self._version, f"advertising {self.info.name}")
        if self._zc is None:
            self.settled.set()
            self.finished.set()
            return
        assert self._zc.loop is not None
        self._zc.loop.call_soon_threadsafe(self._spawn, self._zc)
        self._watch.start()

    def _network_changed(self) -> None:  # on the NetWatch thread
        zc = self._zc
        if zc is None or zc.loop is None:
            return
        addresses = None
        if self._current_addresses is not None:
            try:
                addresses = [a.split("%")[0] for a in self._current_addresses()]
            except Exception as exc:  # pragma: no cover - interface table unreadable
                log.debug("cannot re-read addresses: %r", exc)
        with contextlib.suppress(RuntimeError):  # loop closed: we are closing
            zc.loop.call_soon_threadsafe(self._spawn_refresh, zc, addresses)

    def _spawn_refresh(self, zc: Zeroconf, addresses: list[str] | None) -> None:  # on the zeroconf loop
        if zc.done or (self._refresh is not None and not self._refresh.done()):
            return
        assert zc.loop is not None
        self._refresh = zc.loop.create_task(self._reannounce(zc, addresses))

    async def _reannounce(self, zc: Zeroconf, addresses: list[str] | None) -> None:  # on the zeroconf loop
        """Re-join new interfaces and announce again: browsers may have missed us while the link was down."""
        if zc.registry.async_get_info_name(self.info.key) is None:
            return  # not registered yet: the registration's own announcements will follow
        if addresses and sorted(addresses) != sorted(self.info.parsed_addresses()):
            log.info("mDNS: %s now at %s", self.info.name, addresses)
            self.info.addresses = addresses
        update = getattr(zc, "async_update_interfaces", None)  # zeroconf >= 0.150
        if update is not None:
            try:
                await update()
            except Exception as exc:  # best effort: the announcement below still goes out
                log.debug("mDNS interface rescan failed: %r", exc)
        log.debug("mDNS: network changed, re-announcing %s", self.info.name)
        announce = await zc.async_update_service(self.info)
        await announce

    def _spawn(self, zc: Zeroconf) -> None:  # on the zeroconf loop
        assert zc.loop is not None
        self._task = zc.loop.create_task(self._register(zc))
        self._task.add_done_callback(self._registration_done)

    async def _register(self, zc: Zeroconf) -> None:  # on the zeroconf loop
        wanted = self.info.name
        announce = await zc.async_register_service(
            self.info, allow_name_change=True, cooperating_responders=not self._probe
        )
        if self.info.name != wanted:
            log.warning("mDNS name %s was taken on the network; advertising as %s", wanted, self.info.name)
        self.registered.set()
        self.settled.set()
        await announce  # three announcements, 225 ms apart
        self.announced.set()

    def _registration_done(self, task: asyncio.Task[None]) -> None:  # on the zeroconf loop
        self.settled.set()
        self.finished.set()
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        if isinstance(exc, NonUniqueNameException):
            log.warning("mDNS registration of %s failed: the name is taken", self.info.name)
        else:
            log.warning("mDNS registration of %s failed: %r", self.info.name, exc)

    async def _withdraw(self, zc: Zeroconf) -> None:  # on the zeroconf loop
        for task in (self._task, self._refresh):
            if task is not None and not task.done():
                task.cancel()  # also stops announcements in flight, so none follows the goodbye
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if zc.registry.async_get_info_name(self.info.key) is not None:
            goodbye = await zc.async_unregister_service(self.info)
            await goodbye  # three goodbye packets (TTL 0), 125 ms apart

    def close(self) -> None:
        """Cancel a registration in progress, send goodbyes, close zeroconf (joins its thread). Idempotent."""
        self._watch.close()
        zc, self._zc = self._zc, None
        self.settled.set()
        self.finished.set()
        if zc is None:
            return
        try:
            if zc.loop is not None and zc.loop.is_running():
                asyncio.run_coroutine_threadsafe(self._withdraw(zc), zc.loop).result(CLOSE_TIMEOUT)
        except Exception as exc:  # never let a failed goodbye keep the thread alive
            log.warning("mDNS goodbye for %s failed: %r", self.info.name, exc)
        finally:
            zc.close()
