"""The plain mDNS responder's socket (:mod:`discovery._responder`): one UDP socket on port 5353
for every interface served, the interfaces it joined, and a token bucket for unicast replies."""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import time

__all__ = ["GROUP", "PORT", "Bucket", "Interface", "open_socket"]

log = logging.getLogger(__name__)

GROUP = "224.0.0.251"
PORT = 5353
_UNICAST_RATE = 20.0  # unicast replies per second and interface, after a burst of as many
_IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)  # Linux
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)


class Bucket:
    """A token bucket: ``take()`` is True at most ``rate`` times a second after a burst of ``rate``."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


def open_socket() -> socket.socket:
    """The responder's one socket: port 5353 shared like zeroconf's, no group joined yet."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)  # only the (group, interface) pairs joined here
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)  # which interface each datagram came in on
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)  # RFC 6762 §11
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)  # browsers on this host
        sock.bind(("", PORT))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Interface:
    """One interface the responder serves, and what was last multicast on it."""

    def __init__(self, sock: socket.socket, index: int, address: str) -> None:
        self.index = index
        self.address = address
        self.last_sent: dict[str, float] = {}  # record set ("ptr", "srv", ...) -> monotonic time
        self.unicast = Bucket(_UNICAST_RATE)
        self.sock = sock
        self._mreqn = socket.inet_aton(GROUP) + socket.inet_aton(address) + struct.pack("=i", index)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, self._mreqn)

    def send(self, packet: bytes, to: tuple[str, int] = (GROUP, PORT)) -> None:
        try:
            if to[0] == GROUP:  # one socket for every interface: choose this one for the multicast
                self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(self.address))
            self.sock.sendto(packet, to)
        except OSError as exc:  # link down, no route: the next announcement or query retries
            log.debug("mDNS send on %s to %s: %s", self.address, to, exc)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_DROP_MEMBERSHIP, self._mreqn)
