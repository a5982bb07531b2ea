"""Peers from DNS, where multicast does not reach (Kubernetes pods, cloud networks).

Two spellings of a ``MESH_PEERS`` entry (mixed freely with ``host:port`` entries):

``dns:NAME[:PORT]``
    every address (A and AAAA records) of ``NAME``, each a server on ``PORT`` (default
    :data:`DEFAULT_PORT`). A Kubernetes headless Service's name resolves to one address per
    ready pod. Resolved with the system's resolver (``socket.getaddrinfo``: ``/etc/hosts``,
    search domains), no extra package.
``dns+srv:NAME``
    the SRV records of ``NAME`` (e.g. ``_mesh._tcp.mesh.default.svc.cluster.local``, which a
    headless Service with a port named ``mesh`` publishes): each target and its port is a server.
    Needs ``dnspython`` (extra ``zmq-agent-mesh[dns]``).

Names are looked up again at most every :data:`REFRESH` seconds (pods come and go); a failed
lookup keeps the last answer for :data:`STALE` seconds and logs a warning. ``MESH_DNS_NAMESERVER``
(``ip[:port]``, comma separated) sends every lookup to those servers instead (dnspython): a
Consul agent's DNS on ``127.0.0.1:8600``, or a test's own DNS server.

Like every source, this yields hints (``ServerRecord`` with ``sources == {"dns"}``); the mesh
pings each before it uses it. This module knows nothing of RPC.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from discovery._record import ServerRecord, format_hostport, parse_address

__all__ = ["DEFAULT_PORT", "REFRESH", "STALE", "DnsSource", "is_dns_entry", "split_dns_entries"]

log = logging.getLogger("discovery")

DEFAULT_PORT = 12001  # the port of the docs and the Kubernetes manifests (docs/deploy/)
REFRESH = 1.0  # s: a name is looked up again at most this often
STALE = 60.0  # s: a failed lookup keeps the previous answer this long
LIFETIME = 2.0  # s: the longest one lookup may take (dnspython)
MAX_RECORDS = 256  # addresses or SRV targets taken from one name
_PREFIXES = ("dns:", "dns+srv:")

# (host, port) pairs found for a spec; the resolver seam: ``resolve(kind, name, port) -> [(host, port)]``
Resolver = Callable[[str, str, int], list[tuple[str, int]]]


def is_dns_entry(entry: str) -> bool:
    """``entry`` is ``dns:...`` or ``dns+srv:...``."""
    return isinstance(entry, str) and entry.lower().startswith(_PREFIXES)


def split_dns_entries(entries: Sequence[str], origin: str = "static_peers",
                      resolve: Resolver | None = None) -> tuple[Sequence[str], list[DnsSource]]:
    """``(the host:port entries, a DnsSource per dns entry)``; a lone string is returned as is
    (:func:`~discovery._static.static_records` refuses it with a clear error).

    Raises:
        ValueError: a malformed dns entry (the message names it and ``origin``).
    """
    if isinstance(entries, str):
        return entries, []
    plain = [e for e in entries if not is_dns_entry(e)]
    sources = []
    for entry in entries:
        if is_dns_entry(entry):
            try:
                sources.append(DnsSource(entry, resolve=resolve))
            except ValueError as exc:
                raise ValueError(f"bad entry {entry!r} in {origin}: {exc}") from None
    return plain, sources


def _parse(entry: str) -> tuple[str, str, int]:
    """``(kind, name, port)``: kind ``"a"`` or ``"srv"``."""
    scheme, _, rest = entry.partition(":")
    if scheme.lower() == "dns+srv":
        name = rest.rstrip(".")
        parse_address(f"{name}:1")  # the name's syntax
        return "srv", name, 0
    if ":" in rest:
        name, port = parse_address(rest)
    else:
        name, port = parse_address(rest, DEFAULT_PORT)
    return "a", name, port


def _nameservers() -> list[tuple[str, int]]:
    value = os.environ.get("MESH_DNS_NAMESERVER", "")
    out = []
    for item in filter(None, (p.strip() for p in value.split(","))):
        try:
            out.append(parse_address(item, 53))
        except ValueError as exc:
            raise ValueError(f"MESH_DNS_NAMESERVER: {exc}") from None
    return out


class DnsSource:
    """One ``dns:`` or ``dns+srv:`` entry: its records, looked up again every :data:`REFRESH` s.

    Args:
        entry: ``dns:NAME[:PORT]`` or ``dns+srv:NAME``.
        resolve: the lookup (a test seam); default: the system resolver for ``dns:``, dnspython
            for ``dns+srv:`` and whenever ``MESH_DNS_NAMESERVER`` is set.

    Raises:
        ValueError: a malformed entry or ``MESH_DNS_NAMESERVER``.
    """

    def __init__(self, entry: str, resolve: Resolver | None = None) -> None:
        self.entry = entry
        self.kind, self.name, self.port = _parse(entry)
        self._resolve = resolve or _default_resolver(_nameservers())
        self._lock = threading.Lock()
        self._records: list[ServerRecord] = []
        self._at = float("-inf")  # when the last lookup ran
        self._good_at = float("-inf")  # when one last succeeded
        self._warned = False

    def records(self) -> list[ServerRecord]:
        """The servers the name gives now (cached for :data:`REFRESH` s; never raises)."""
        with self._lock:
            now = time.monotonic()
            if now - self._at >= REFRESH:
                self._at = now
                self._lookup(now)
            return list(self._records)

    def _lookup(self, now: float) -> None:
        try:
            found = self._resolve(self.kind, self.name, self.port)[:MAX_RECORDS]
        except Exception as exc:  # noqa: BLE001 - a source that fails is empty, never an error
            if not self._warned:
                log.warning("DNS peers %s: lookup failed: %s", self.entry, exc)
                self._warned = True
            if now - self._good_at > STALE:
                self._records = []
            return
        self._warned = False
        self._good_at = now
        records: dict[tuple[str, int], ServerRecord] = {}
        for host, port in found:
            try:
                host, port = parse_address(format_hostport(host, port))
            except ValueError:
                continue  # a record that is no address: skipped
            records.setdefault((host, port), ServerRecord(
                name=format_hostport(host, port), host=host, port=port, addresses=(host,),
                sources=frozenset({"dns"}),
            ))
        self._records = sorted(records.values(), key=lambda r: (r.host, r.port))

    def __repr__(self) -> str:
        return f"<DnsSource {self.entry}>"


# ----------------------------------------------------------------------------- resolvers
def _default_resolver(nameservers: list[tuple[str, int]]) -> Resolver:
    def resolve(kind: str, name: str, port: int) -> list[tuple[str, int]]:
        if kind == "a" and not nameservers:
            return system_addresses(name, port)
        return dnspython_lookup(kind, name, port, nameservers)

    return resolve


def system_addresses(name: str, port: int) -> list[tuple[str, int]]:
    """Every address of ``name`` from the system's resolver, on ``port``."""
    infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    seen = dict.fromkeys(str(info[4][0]) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6))
    return [(host, port) for host in seen]


def _dnspython() -> Any:
    try:
        import dns.resolver
    except ImportError:
        raise ImportError(
            "dns+srv: peers (and MESH_DNS_NAMESERVER) need the dnspython package: "
            "pip install 'zmq-agent-mesh[dns]'"
        ) from None
    return dns.resolver


def dnspython_lookup(kind: str, name: str, port: int, nameservers: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """A/AAAA (``kind == "a"``) or SRV records of ``name`` with dnspython, from ``nameservers``
    (``[(ip, port)]``; none: the system's ``/etc/resolv.conf``, with its search domains)."""
    resolver_mod = _dnspython()
    resolver = resolver_mod.Resolver(configure=not nameservers)
    if nameservers:
        resolver.nameserver_ports = {ip: p for ip, p in nameservers}  # before: the setter reads it
        resolver.nameservers = [ip for ip, _ in nameservers]
    resolver.lifetime = LIFETIME
    if kind == "a":
        return [(host, port) for host in _addresses(resolver_mod, resolver, name, {})]
    answer = resolver.resolve(name, "SRV", search=True)
    glue: dict[str, list[str]] = {}
    for rrset in answer.response.additional:  # the targets' addresses, if the server sent them
        if rrset.rdtype in (1, 28):  # A, AAAA
            glue.setdefault(str(rrset.name).rstrip(".").lower(), []).extend(r.address for r in rrset)
    out = []
    for srv in sorted(answer, key=lambda r: (r.priority, -r.weight, str(r.target)))[:MAX_RECORDS]:
        target = str(srv.target).rstrip(".")
        if target == "":
            continue  # "." : the service is decidedly not available there
        for host in _addresses(resolver_mod, resolver, target, glue):
            out.append((host, int(srv.port)))
    return out


def _addresses(resolver_mod: Any, resolver: Any, name: str, glue: dict[str, list[str]]) -> list[str]:
    known = glue.get(name.lower())
    if known:
        return known
    out: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            out += [r.address for r in resolver.resolve(name, rdtype, search=True)]
        except (resolver_mod.NoAnswer, resolver_mod.NXDOMAIN):
            continue
    return out
