"""A plain mDNS responder for one server: announce, answer, say goodbye; no zeroconf, no asyncio.

python-zeroconf with asyncio and ssl costs a server ~7 MiB (NOTES-footprint.md), to answer a few
questions about its own records. This responder does just that, with the standard library, IPv4
only (the advertiser keeps zeroconf for IPv6, for name probing, and where ``SIOCGIFCONF`` or
``IP_PKTINFO`` are missing). Records, as :mod:`discovery._mdns` registers them:

- PTR ``<type>`` -> ``<label>.<type>`` (and ``_services._dns-sd._udp.local.`` -> ``<type>``);
- SRV ``<label>.<type>`` -> port, target ``<label>.<type>`` (zeroconf's default server name);
- TXT ``<label>.<type>`` -> the record's fields; A ``<label>.<type>`` -> each address.

Behaviour (RFC 6762): two announcements one second apart, and again after a network change
(:class:`~discovery._netwatch.NetWatch`); answers to questions for those names: multicast (each
record set at most once a second per interface, known answers suppressed), plus a unicast copy to
the asker for a QU question, and a unicast reply with the query's id and TTLs of at most 10 s to a
query from a port other than 5353 (the one-shot query of :mod:`discovery._oneshot` and
:mod:`discovery._probe`); goodbyes (TTL 0) on close. Unicast replies are rate-limited (a token
bucket per interface). The name is unique by construction (host, pid, port), so it is not probed.

One socket, bound to port 5353 like zeroconf's (``SO_REUSEADDR``/``SO_REUSEPORT``), joined to
224.0.0.251 on the served interfaces only (``IP_MULTICAST_ALL`` off); a datagram that did not
arrive on one of them (``IP_PKTINFO``) is dropped, so a loopback-only server answers nobody else.
Answers go out on the interface the question came in on. Datagrams are parsed as DNS (:mod:`discovery._mdns_wire`, bounded, never unpickled); a
malformed one is dropped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable

from discovery._mdns_socket import IP_PKTINFO as _IP_PKTINFO, PORT as _PORT, Interface as _Interface, open_socket
from discovery._mdns_wire import ANY, PTR, SRV, TXT, A, Writer, encode_txt, parse_query
from discovery._netwatch import NetWatch

__all__ = ["MdnsResponder", "available"]

log = logging.getLogger(__name__)

_SERVICES = "_services._dns-sd._udp.local."  # DNS-SD service type enumeration (RFC 6763 §9)
_TTL_HOST = 120  # SRV, A (RFC 6762 §10)
_TTL_OTHER = 4500  # PTR, TXT
_LEGACY_TTL = 10  # RFC 6762 §6.7
_MCAST_INTERVAL = 1.0  # s: a record set multicast at most once a second per interface (RFC 6762 §6)
_ANNOUNCE_AT = (0.0, 1.0)  # s after start (or a network change): RFC 6762 §8.3
_MAX_DATAGRAM = 9000  # RFC 6762 §17
_PKTINFO = struct.Struct("=i4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr


def available() -> bool:
    """This platform has what the responder needs (Linux: ``IP_PKTINFO``, ``IP_MULTICAST_ALL``)."""
    return os.name == "posix" and hasattr(socket, "if_nametoindex") and os.uname().sysname == "Linux"


class MdnsResponder:
    """Advertise one service over IPv4 mDNS; the same surface as :class:`discovery._mdns.MdnsAdvertiser`.

    Args:
        service_type: e.g. ``_agentmesh._tcp.local.``.
        label: the instance label (``<label>.<service_type>`` is the instance name).
        port: the server's TCP port.
        properties: the TXT fields.
        addresses: IPv4 addresses for the A records.
        interfaces: ``(index, address)`` of each interface to serve on.
        current: returns ``(addresses, interfaces)`` now (``None``: unknown, keep them); called after a
            network change (a server bound to ``0.0.0.0`` follows its interfaces). ``None``: keep them.
    """

    def __init__(
        self,
        service_type: str,
        label: str,
        port: int,
        properties: dict[str, str],
        addresses: list[str],
        interfaces: list[tuple[int, str]],
        current: Callable[[], tuple[list[str], list[tuple[int, str]]] | None] | None = None,
    ) -> None:
        self.service_type = service_type
        self.name = f"{label}.{service_type}"
        self._type_l = service_type.lower()
        self._name_l = self.name.lower()
        self._port = port
        self._txt = encode_txt(properties)
        self._addresses = addresses
        self._wanted = interfaces
        self._current = current
        self._sock: socket.socket | None = None
        self._ifaces: dict[int, _Interface] = {}
        self._announce_due: list[float] = []
        self._lock = threading.Lock()  # guards _announce_due and the interface change request
        self._changed = False
        self._closing = False
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._watch = NetWatch(self._network_changed, name=label)
        self.registered = threading.Event()
        """Set once the records answer queries (at once: nothing is probed)."""
        self.settled = threading.Event()
        """Set once the responder runs, or failed to."""
        self.announced = threading.Event()
        """Set once the announcements after start went out."""
        self.finished = threading.Event()
        """Set once the announcements are over, whatever the outcome."""

    # --- records ----------------------------------------------------------------------------

    def _records(self, w: Writer, section: int, sets: list[str], ttl: int | None, flush: bool) -> None:
        def t(default: int) -> int:
            return default if ttl is None else min(ttl, default)

        for kind in sets:
            if kind == "ptr":
                w.record(section, self.service_type, PTR, t(_TTL_OTHER), self.name)
            elif kind == "services":
                w.record(section, _SERVICES, PTR, t(_TTL_OTHER), self.service_type)
            elif kind == "srv":
                w.record(section, self.name, SRV, t(_TTL_HOST), struct.pack("!3H", 0, 0, self._port), self.name,
                         flush=flush)
            elif kind == "txt":
                w.record(section, self.name, TXT, t(_TTL_OTHER), self._txt, flush=flush)
            elif kind == "a":
                for addr in self._addresses:
                    w.record(section, self.name, A, t(_TTL_HOST), socket.inet_aton(addr), flush=flush)

    def _message(self, answers: list[str], extra: list[str], ttl: int | None = None) -> bytes:
        w = Writer()
        self._records(w, 1, answers, ttl, flush=ttl != 0)
        self._records(w, 3, extra, ttl, flush=True)
        return w.bytes()

    def announcement(self) -> bytes:
        """The unsolicited response announcing every record."""
        return self._message(["ptr", "srv", "txt", "a"], [])

    def goodbye(self) -> bytes:
        """Every record with TTL 0 (RFC 6762 §10.1)."""
        return self._message(["ptr", "srv", "txt", "a"], [], ttl=0)

    # --- answering --------------------------------------------------------------------------

    def _wanted_sets(self, questions: list[tuple[str, int, bool]]) -> tuple[list[str], bool]:
        want: list[str] = []
        qu = False
        for name, qtype, unicast in questions:
            got: list[str] = []
            if name == self._type_l and qtype in (PTR, ANY):
                got = ["ptr"]
            elif name == _SERVICES and qtype in (PTR, ANY):
                got = ["services"]
            elif name == self._name_l:
                got = {SRV: ["srv"], TXT: ["txt"], A: ["a"], ANY: ["srv", "txt", "a"]}.get(qtype, [])
            if got:
                qu = qu or unicast
                want.extend(k for k in got if k not in want)
        return want, qu

    def answer(self, data: bytes, src: tuple[str, int], iface: _Interface) -> None:
        """Answer one datagram (silently nothing for anything not a query for our names).

        Raises:
            ValueError: a malformed datagram.
        """
        query = parse_query(data)
        if query is None:
            return
        want, qu = self._wanted_sets(query.questions)
        if not want:
            return
        extra = [k for k in ("srv", "txt", "a") if k not in want] if "ptr" in want else []
        if src[1] != _PORT:  # legacy unicast (RFC 6762 §6.7): answer that port with its id and question
            if iface.unicast.take():
                w = Writer(query.id)
                for name, qtype, _qu in query.questions:
                    w.question(name, qtype)
                self._records(w, 1, want, _LEGACY_TTL, flush=False)
                self._records(w, 3, extra, _LEGACY_TTL, flush=False)
                iface.send(w.bytes(), src)
            return
        for name, rtype, target, ttl in query.known:  # known-answer suppression (RFC 6762 §7.1)
            if name == self._type_l and rtype == PTR and target == self._name_l and ttl >= _TTL_OTHER // 2:
                want = [k for k in want if k != "ptr"]
        if not want:
            return
        now = time.monotonic()
        fresh = [k for k in want if now - iface.last_sent.get(k, -_MCAST_INTERVAL) >= _MCAST_INTERVAL]
        if fresh:
            for k in fresh:
                iface.last_sent[k] = now
            iface.send(self._message(fresh, [k for k in extra if k not in fresh]))
        if qu and iface.unicast.take():
            iface.send(self._message(want, extra), src)

    # --- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Open a socket on each interface and start announcing (a failure is logged, not raised)."""
        try:
            self._sock = open_socket()
        except OSError as exc:
            log.debug("mDNS advertising: %s", exc)
        else:
            self._open(self._wanted)
        if not self._ifaces:
            log.warning("mDNS advertising unavailable on %s; other discovery sources keep working",
                        [a for _, a in self._wanted])
            self.settled.set()
            self.finished.set()
            return
        self._schedule_announcements()
        self.registered.set()
        self.settled.set()
        self._thread = threading.Thread(target=self._run, name=f"discovery-mdns-{self.name[:20]}", daemon=True)
        self._thread.start()
        self._watch.start()

    def _open(self, wanted: list[tuple[int, str]]) -> None:
        if self._sock is None:
            return
        keep = set(wanted)
        for index in [i for i, iface in self._ifaces.items() if (i, iface.address) not in keep]:
            self._ifaces.pop(index).close()  # gone, or its address changed: joined again below
        for index, address in wanted:
            if index in self._ifaces:
                continue
            try:
                self._ifaces[index] = _Interface(self._sock, index, address)
            except OSError as exc:  # no multicast there, address gone
                log.debug("mDNS advertising on %s: %s", address, exc)

    def _schedule_announcements(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._announce_due = [now + at for at in _ANNOUNCE_AT]

    def _network_changed(self) -> None:  # on the NetWatch thread
        with self._lock:
            self._changed = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"c")

    def _apply_change(self) -> None:  # on the responder thread
        if self._current is not None:
            try:
                now = self._current()
            except Exception as exc:  # pragma: no cover - an interface named in MESH_INTERFACES is gone
                log.debug("cannot re-read addresses: %r", exc)
                now = None
            if now is not None:  # None: the interface table is unreadable; keep what we serve
                addresses, wanted = now
                if addresses and sorted(addresses) != sorted(self._addresses):
                    log.info("mDNS: %s now at %s", self.name, addresses)
                    self._addresses = addresses
                self._wanted = wanted
        self._open(self._wanted)
        for iface in self._ifaces.values():
            iface.last_sent.clear()
        log.debug("mDNS: network changed, re-announcing %s", self.name)
        self._schedule_announcements()

    def _run(self) -> None:
        try:
            while not self._closing:
                with self._lock:
                    changed, self._changed = self._changed, False
                    due = self._announce_due
                    now = time.monotonic()
                    send_now = bool(due) and due[0] <= now
                    if send_now:
                        due.pop(0)
                    timeout = max(0.0, due[0] - now) if due else None
                if changed:
                    self._apply_change()
                    continue
                if send_now:
                    packet = self.announcement()
                    for iface in self._ifaces.values():
                        iface.send(packet)
                    if not due and not self.announced.is_set():
                        self.announced.set()
                        self.finished.set()
                    continue
                assert self._sock is not None
                ready, _, _ = select.select([self._sock, self._wake_r], [], [], timeout)
                for sock in ready:
                    if sock is self._wake_r:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(64)
                    else:
                        self._read(sock)
        except Exception:  # pragma: no cover - a bug must not kill the server; log it
            log.exception("mDNS responder for %s failed", self.name)
        finally:
            self.finished.set()

    def _read(self, sock: socket.socket) -> None:
        for _ in range(64):  # bounded per wake-up: a flood cannot starve announcements
            try:
                data, ancdata, _flags, src = sock.recvmsg(_MAX_DATAGRAM, socket.CMSG_SPACE(_PKTINFO.size))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("mDNS receive: %s", exc)
                return
            iface = self._ifaces.get(self._arrived_on(ancdata))
            if iface is None:  # not on an interface we serve (a loopback-only server: not from the LAN)
                continue
            try:
                self.answer(data, src, iface)
            except (ValueError, IndexError, struct.error, UnicodeError) as exc:
                log.debug("mDNS: dropped a malformed datagram from %s: %s", src, exc)

    @staticmethod
    def _arrived_on(ancdata: list[tuple[int, int, bytes]]) -> int:
        """The index of the interface a datagram came in on; -1 when the packet info is missing."""
        for level, kind, data in ancdata:
            if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(data) >= _PKTINFO.size:
                return int(_PKTINFO.unpack_from(data)[0])
        return -1

    def close(self) -> None:
        """Send goodbyes on every interface, stop the thread, close the sockets. Idempotent."""
        self._watch.close()
        self._closing = True
        thread, self._thread = self._thread, None
        if thread is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")
            thread.join(5.0)
            if self.registered.is_set():
                packet = self.goodbye()
                for attempt in range(2):  # twice: a lost goodbye leaves the record for its TTL
                    for iface in self._ifaces.values():
                        iface.send(packet)
                    if attempt == 0:
                        time.sleep(0.02)
        for iface in self._ifaces.values():
            iface.close()
        self._ifaces.clear()
        if self._sock is not None:
            self._sock.close()
        for s in (self._wake_r, self._wake_w):
            s.close()
        self.settled.set()
        self.finished.set()
