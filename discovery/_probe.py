"""A plain mDNS probe: "does anybody answer for this service type?", without zeroconf.

A browser's first look usually finds nothing (a script whose ``to_dist()`` then falls back to its
child server), and zeroconf costs ~60-170 ms of CPU to import and start. So a browser made with
``probe_first`` asks first with the same one-shot query as :mod:`discovery._oneshot` (a PTR
question for the service type, sent to 224.0.0.251:5353 from an ephemeral port on each IPv4
interface, answered by unicast straight to that port, RFC 6762 §6.7), built and read with the
standard library only. Any valid answer to it means someone serves that type: the browser then
starts zeroconf at once, which asks again and reads the records. When nobody answers within the
probe's window the browser starts zeroconf anyway, in the background, so servers that appear
later are still found.

The answer is not parsed beyond its header (our query id, a response, at least one record):
zeroconf's own query reads the records a moment later.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import socket
import struct
import threading
import time
from collections.abc import Callable

__all__ = ["Probe", "multicast_socket", "ptr_query"]

log = logging.getLogger(__name__)

_MDNS_GROUP = ("224.0.0.251", 5353)
_TYPE_PTR = 12  # RFC 1035 §3.2.2
_CLASS_IN = 1  # QM: the unicast-response bit is clear (answered to our port anyway: not port 5353)
_QR = 0x8000  # the header's response flag


def ptr_query(service_type: str, query_id: int) -> bytes:
    """A DNS query with one PTR question for ``service_type`` (e.g. ``_agentmesh._tcp.local.``)."""
    name = b"".join(bytes([len(label)]) + label for label in service_type.encode("ascii").split(b".") if label)
    return struct.pack("!6H", query_id, 0, 1, 0, 0, 0) + name + b"\0" + struct.pack("!2H", _TYPE_PTR, _CLASS_IN)


def is_answer(data: bytes, query_id: int) -> bool:
    """``data`` is a response to query ``query_id`` that carries at least one record."""
    if len(data) < 12:
        return False
    qid, flags, _qd, an, ns, ar = struct.unpack_from("!6H", data)
    return qid == query_id and bool(flags & _QR) and not flags & 0x000F and an + ns + ar > 0


def multicast_socket(addr: str) -> socket.socket:
    """A non-blocking UDP socket bound to ``addr`` (an ephemeral port) that multicasts on that interface."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(addr))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)  # RFC 6762 §11
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)  # responders on this host too
        sock.bind((addr, 0))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Probe:
    """One probe: :meth:`start` sends it and listens on a thread for ``window`` seconds.

    ``then(heard)`` runs on that thread once, at the first answer (``heard`` True) or when the
    window ends without one (False), unless :meth:`close` came first.

    Args:
        service_type: the DNS-SD type asked for.
        addresses: the IPv4 interface addresses to ask from (others are skipped).
        window: seconds to listen for an answer.
        then: what to do next (start zeroconf).
    """

    def __init__(self, service_type: str, addresses: list[str], window: float, then: Callable[[bool], None]) -> None:
        self.service_type = service_type
        self.addresses = [a for a in addresses if ":" not in a]
        self.window = window
        self.then = then
        self.sent_at: float | None = None  # monotonic time the queries went out (or none could)
        self.heard = False
        self._closed = False
        self._lock = threading.Lock()  # guards the wake pipe: closed by the thread when it ends
        self._wake_r, self._wake_w = os.pipe()
        self._pipe_open = True
        self._thread = threading.Thread(target=self._run, name="discovery-probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop listening (``then`` is not called after this returns, unless it already runs)."""
        self._closed = True
        with self._lock:
            if self._pipe_open:
                with contextlib.suppress(OSError):
                    os.write(self._wake_w, b"x")
        if self._thread.ident is not None and self._thread is not threading.current_thread():
            self._thread.join(1.0)

    def _run(self) -> None:
        query_id = random.randint(1, 0xFFFF)  # noqa: S311 - matches answers, not a secret
        packet = ptr_query(self.service_type, query_id)
        socks: list[socket.socket] = []
        try:
            for addr in self.addresses:
                try:
                    sock = multicast_socket(addr)
                    socks.append(sock)
                    sock.sendto(packet, _MDNS_GROUP)
                except OSError as exc:  # no multicast route there, address gone: skip it
                    log.debug("mDNS probe on %s: %s", addr, exc)
            self.sent_at = time.monotonic()
            heard = self._listen(socks, query_id) if socks else False
        finally:
            for sock in socks:
                sock.close()
            with self._lock:
                self._pipe_open = False
                os.close(self._wake_r)
                os.close(self._wake_w)
        if heard:
            self.heard = True
        if not self._closed:
            self.then(heard)

    def _listen(self, socks: list[socket.socket], query_id: int) -> bool:
        deadline = time.monotonic() + self.window
        while not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            ready, _, _ = select.select([*socks, self._wake_r], [], [], remaining)
            for sock in ready:
                if sock is self._wake_r:
                    return False
                with contextlib.suppress(OSError):
                    while True:
                        data = sock.recv(9000)
                        if is_answer(data, query_id):
                            return True
        return False
