"""Host and address helpers that need no zeroconf: wildcards, loopback, which advertised address
to connect to, resolving a name, and this host's IPv4 addresses (for a plain mDNS probe).

Kept apart from :mod:`discovery._net` (which imports zeroconf for its interface choices) so that a
browser that finds nothing on its first look never imports zeroconf (:mod:`discovery._probe`).
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
import time
from collections.abc import Sequence

__all__ = ["ip_version_name", "ipv4_addresses", "is_loopback", "is_wildcard", "pick_host", "resolve_host"]

_WILDCARDS = {"", "*", "0.0.0.0", "::", "[::]"}
_NETWORKS_TTL = 2.0  # seconds the local network list is reused by pick_host
_VERSION_NAMES = ("v4", "v6", "all")
_SIOCGIFADDR = 0x8915  # Linux ioctl: an interface's (primary) IPv4 address


def ip_version_name(text: str) -> str:
    """``"v4"``, ``"v6"`` or ``"all"`` (any case), lower-cased.

    Raises:
        ValueError: any other value.
    """
    name = text.lower() if isinstance(text, str) else None
    if name not in _VERSION_NAMES:
        raise ValueError(f"ip_version must be 'v4', 'v6' or 'all', not {text!r}")
    return name


def is_wildcard(host: str) -> bool:
    """``host`` means every interface (``0.0.0.0``, ``::``, ``*`` or empty)."""
    return host.strip() in _WILDCARDS


def is_loopback(host: str) -> bool:
    """``host`` is a loopback address or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Networks:
    """The local networks, re-read at most every couple of seconds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stamp = -_NETWORKS_TTL
        self._nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []

    def get(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        with self._lock:
            now = time.monotonic()
            if now - self._stamp > _NETWORKS_TTL:
                nets = []
                import ifaddr  # here: ~20 ms to import (ctypes), and a browser that finds nothing never needs it

                for adapter in ifaddr.get_adapters():
                    for ip in adapter.ips:
                        addr = ip.ip[0] if isinstance(ip.ip, tuple) else ip.ip
                        try:
                            nets.append(ipaddress.ip_network(f"{addr}/{ip.network_prefix}", strict=False))
                        except ValueError:
                            continue
                self._nets, self._stamp = nets, now
            return self._nets


_networks = _Networks()


def pick_host(addresses: Sequence[str], prefer_v6: bool = False) -> str:
    """The address to connect to among those a server advertised.

    Order: an address on one of this host's networks, then other routable
    addresses, then link-local, then loopback; IPv4 before IPv6 unless
    ``prefer_v6``. Ties keep the advertised order.

    Raises:
        ValueError: ``addresses`` is empty.
    """
    if not addresses:
        raise ValueError("no address to pick from")
    nets = _networks.get()
    key = (tuple(addresses), prefer_v6)
    kept = _picked.get(key)
    if kept is not None and kept[0] is nets:  # (a browser re-reads every server's record often: no parsing again)
        return kept[1]
    host = _pick(addresses, prefer_v6, nets)
    if len(_picked) >= 1024:
        _picked.clear()
    _picked[key] = (nets, host)
    return host


_picked: dict[tuple[tuple[str, ...], bool], tuple[list, str]] = {}  # (addresses, v6) -> (the networks then, pick)


def _pick(addresses: Sequence[str], prefer_v6: bool, nets: list) -> str:
    def rank(item: tuple[int, str]) -> tuple[int, int, int]:
        index, text = item
        try:
            addr = ipaddress.ip_address(text.split("%")[0])
        except ValueError:
            return (1, 0, index)  # a host name: routable, presumably
        if addr.is_loopback:
            cls = 3
        elif addr.is_link_local:
            cls = 2
        elif any(addr in net for net in nets if net.version == addr.version and not net.is_loopback):
            cls = 0
        else:
            cls = 1
        v6_first = (addr.version == 4) if prefer_v6 else (addr.version == 6)
        return (cls, int(v6_first), index)

    return min(enumerate(addresses), key=rank)[1]


def resolve_host(host: str) -> str:
    """An IP address for ``host`` (a name is looked up once); wildcards and IPs unchanged.

    Raises:
        ValueError: the name does not resolve.
    """
    if is_wildcard(host) or host == "localhost":
        return host
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ValueError(f"cannot resolve host {host!r}: {exc}") from None
    return str(infos[0][4][0])


def ipv4_addresses() -> list[str] | None:
    """This host's IPv4 interface addresses, loopback last, read without ``ifaddr`` (Linux: one
    ``ioctl`` per interface, the primary address of each); ``None`` where that is not available."""
    if not sys.platform.startswith("linux") or not hasattr(socket, "if_nameindex"):
        return None
    import fcntl
    import struct

    out: list[str] = []
    try:
        names = [name for _, name in socket.if_nameindex()]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for name in names:
                try:
                    data = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
                except OSError:  # no IPv4 address on it
                    continue
                out.append(socket.inet_ntoa(data[20:24]))
    except OSError:
        return None
    return sorted(dict.fromkeys(out), key=is_loopback)
