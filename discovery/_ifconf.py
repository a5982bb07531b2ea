"""This host's IPv4 interfaces without ``ifaddr`` (Linux ``SIOCGIFCONF``): name, index, address.

``ifaddr`` (with ``ipaddress`` and ctypes' structures) costs ~1.2 MiB of a server's memory; the
plain mDNS responder (:mod:`discovery._responder`) needs only the IPv4 addresses and the index of
the interface each lives on. ``SIOCGIFCONF`` lists every IPv4 address, secondary ones too (an alias
label such as ``eth0:1`` names its device before the colon).
"""

from __future__ import annotations

import array
import os
import socket
import struct
import sys

__all__ = ["ipv4_interfaces", "plain_plan"]

_SIOCGIFCONF = 0x8912  # linux/sockios.h
_IFREQ = 40 if struct.calcsize("P") == 8 else 32  # sizeof(struct ifreq): name[16] + a 24/16-byte union
_IFCONF = "iP"  # struct ifconf: int ifc_len; char *ifc_buf
_MAX_ADDRESSES = 1024


def ipv4_interfaces() -> list[tuple[str, int, str]] | None:
    """``(interface name, index, IPv4 address)`` for every address of this host, loopback last.

    ``None`` where ``SIOCGIFCONF`` is not available (not Linux, or refused): callers use zeroconf.
    """
    if not sys.platform.startswith("linux") or not hasattr(socket, "if_nametoindex"):
        return None
    import fcntl  # here: only the plain responder needs it

    buf = array.array("B", bytes(_IFREQ * _MAX_ADDRESSES))
    address, _ = buf.buffer_info()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            result = fcntl.ioctl(sock.fileno(), _SIOCGIFCONF, struct.pack(_IFCONF, len(buf), address))
    except OSError:
        return None
    length, _ = struct.unpack(_IFCONF, result)
    data = buf.tobytes()[:length]
    out: list[tuple[str, int, str]] = []
    for offset in range(0, len(data) - _IFREQ + 1, _IFREQ):
        label = data[offset : offset + 16].split(b"\0", 1)[0].decode("ascii", "replace")
        family = struct.unpack_from("H", data, offset + 16)[0]
        if family != socket.AF_INET:
            continue
        addr = socket.inet_ntoa(data[offset + 20 : offset + 24])
        device = label.split(":", 1)[0]
        try:
            index = socket.if_nametoindex(device)
        except OSError:  # gone meanwhile
            continue
        out.append((device, index, addr))
    out = list(dict.fromkeys(out))
    return sorted(out, key=lambda item: item[2].startswith("127."))


def plain_plan(host: str, interfaces: list[str] | None) -> tuple[list[str], list[tuple[int, str]]] | None:
    """What the plain IPv4 responder serves for a server bound to ``host``: ``(addresses for the A
    records, [(interface index, interface address)])``, chosen as :func:`discovery._net.advertiser_interfaces`
    and :func:`~discovery._net.advertised_addresses` choose them for IPv4.

    ``None`` when the plain responder cannot serve this (an IPv6 host or interface, no
    ``SIOCGIFCONF``): the advertiser then uses zeroconf.

    Raises:
        ValueError: an interface entry is neither an IPv4 address nor an interface with one.
    """
    from discovery._hosts import is_loopback, is_wildcard

    if ":" in host:
        return None
    table = ipv4_interfaces()
    if table is None:
        return None
    chosen = interfaces
    if chosen is None:
        raw = os.environ.get("MESH_INTERFACES", "").strip()
        chosen = [p for p in raw.split(",") if p.strip()] if raw else None
    spec: list[str] | None
    if chosen:
        spec = []
        for entry in (e.strip() for e in chosen):
            if not entry:
                continue
            if ":" in entry:
                return None
            try:
                socket.inet_aton(entry)
                if entry.count(".") != 3:
                    raise OSError
                spec.append(entry)
                continue
            except OSError:
                pass
            found = [addr for name, _, addr in table if name == entry]
            if not found:
                raise ValueError(f"interface {entry!r} is neither an IP address nor an interface with an address")
            spec.extend(found)
        spec = list(dict.fromkeys(spec))
    elif is_wildcard(host):
        spec = None
    elif is_loopback(host):
        spec = ["127.0.0.1"]
    else:
        spec = [host]
    index_of = {addr: index for _, index, addr in table}
    if spec is None:
        first: dict[int, tuple[int, str]] = {}
        for _, index, addr in table:
            first.setdefault(index, (index, addr))  # one socket per interface, on its first address
        ifaces = list(first.values())
    else:
        ifaces = [(index_of[a], a) for a in spec if a in index_of]
    if is_wildcard(host):
        addresses = [addr for _, _, addr in table if spec is None or addr in spec]
    else:
        addresses = ["127.0.0.1"] if host == "localhost" else [host]
    return addresses, ifaces
