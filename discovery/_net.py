"""Interfaces and addresses: which to multicast on, which to advertise, which to connect to.

Only reads the host's interface table (``ifaddr``, which zeroconf depends on);
never opens a socket. The helpers that need no zeroconf live in :mod:`discovery._hosts` (re-exported here).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Sequence

import ifaddr
from zeroconf import InterfaceChoice, IPVersion

from discovery._hosts import ip_version_name, is_loopback, is_wildcard, pick_host, resolve_host

__all__ = [
    "InterfaceSpec",
    "advertised_addresses",
    "advertiser_interfaces",
    "browser_interfaces",
    "is_loopback",
    "is_wildcard",
    "local_addresses",
    "pick_host",
    "resolve_host",
    "to_ip_version",
]

InterfaceSpec = list[str] | InterfaceChoice
"""What zeroconf is given: a list of interface addresses, or ``InterfaceChoice.All``."""

_VERSIONS = {"v4": IPVersion.V4Only, "v6": IPVersion.V6Only, "all": IPVersion.All}


def to_ip_version(text: str) -> IPVersion:
    """Map ``"v4"``, ``"v6"`` or ``"all"`` to zeroconf's ``IPVersion``.

    Raises:
        ValueError: any other value.
    """
    return _VERSIONS[ip_version_name(text)]


def _version_ok(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, version: IPVersion) -> bool:
    if version is IPVersion.V4Only:
        return addr.version == 4
    if version is IPVersion.V6Only:
        return addr.version == 6
    return True


def local_addresses(version: IPVersion = IPVersion.V4Only, names: Iterable[str] | None = None) -> list[str]:
    """This host's addresses, non-loopback first; IPv6 link-local ones carry their scope (``fe80::1%eth0``).

    Args:
        version: which address families to list.
        names: only these interfaces (by name); all when ``None``.
    """
    wanted = set(names) if names is not None else None
    out: list[str] = []
    for adapter in ifaddr.get_adapters():
        if wanted is not None and adapter.name not in wanted:
            continue
        for ip in adapter.ips:
            if isinstance(ip.ip, tuple):  # IPv6: (address, flowinfo, scope id)
                addr6, _flow, scope = ip.ip
                text = f"{addr6}%{adapter.name}" if scope else str(addr6)
            else:
                text = str(ip.ip)
            try:
                parsed = ipaddress.ip_address(text)
            except ValueError:
                continue
            if _version_ok(parsed, version):
                out.append(text)
    return sorted(dict.fromkeys(out), key=lambda a: (is_loopback(a.split("%")[0]), ":" in a))


def _expand(entries: Sequence[str], version: IPVersion) -> list[str]:
    """Interface entries (IP addresses or interface names) as IP addresses."""
    out: list[str] = []
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        try:
            ipaddress.ip_address(entry)
            out.append(entry)
            continue
        except ValueError:
            pass
        addrs = local_addresses(version, [entry])
        if not addrs:
            raise ValueError(f"interface {entry!r} is neither an IP address nor an interface with an address")
        # zeroconf wants bare IPv6 addresses (it finds the index itself).
        out.extend(a.split("%")[0] for a in addrs)
    return list(dict.fromkeys(out))


def _env_interfaces() -> list[str] | None:
    raw = os.environ.get("MESH_INTERFACES", "").strip()
    return [p for p in raw.split(",") if p.strip()] if raw else None


def _all_interfaces(version: IPVersion) -> InterfaceSpec:
    """Every interface; for IPv6, every address but ``::1`` (zeroconf cannot multicast there)."""
    if version is IPVersion.V4Only:
        return InterfaceChoice.All
    addrs = [a.split("%")[0] for a in local_addresses(version) if a != "::1"]
    return addrs or InterfaceChoice.All


def browser_interfaces(interfaces: Sequence[str] | None, version: IPVersion) -> InterfaceSpec:
    """Interfaces a browser multicasts on: the argument, else ``MESH_INTERFACES``, else all."""
    chosen = interfaces if interfaces is not None else _env_interfaces()
    return _expand(chosen, version) if chosen else _all_interfaces(version)


def advertiser_interfaces(host: str, interfaces: Sequence[str] | None, version: IPVersion) -> InterfaceSpec:
    """Interfaces an advertiser multicasts on.

    The argument, else ``MESH_INTERFACES``, else from the bound host: loopback ->
    ``["127.0.0.1"]``, a specific address -> that address, a wildcard -> all.
    """
    chosen = interfaces if interfaces is not None else _env_interfaces()
    if chosen:
        return _expand(chosen, version)
    if is_wildcard(host):
        return _all_interfaces(version)
    if is_loopback(host):
        # zeroconf cannot multicast on ::1; IPv4 loopback carries the records of either family.
        return ["127.0.0.1"]
    return [host.split("%")[0]]


def advertised_addresses(host: str, interfaces: InterfaceSpec, version: IPVersion) -> list[str]:
    """The addresses a server bound to ``host`` is reachable at, non-loopback first.

    A specific host is advertised as itself; a wildcard as every address of the
    chosen interfaces (of the wildcard's family, or both for ``ip_version="all"``).
    """
    if is_wildcard(host):
        family = version
        if host.strip() in ("::", "[::]") and version is IPVersion.V4Only:
            family = IPVersion.All  # a "::" socket accepts IPv4 too (unless IPV6_V6ONLY)
        if host.strip() not in ("::", "[::]") and version is not IPVersion.V4Only:
            family = IPVersion.V4Only  # "0.0.0.0" accepts IPv4 only
        everything = local_addresses(family)
        if isinstance(interfaces, list):
            keep = set(interfaces)
            everything = [a for a in everything if a.split("%")[0] in keep]
        return everything
    if host == "localhost":
        return ["127.0.0.1"]
    return [host]


