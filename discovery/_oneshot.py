"""One-shot mDNS queries (RFC 6762 §5.1, §6.7): a fresh browser's fast first answer.

A query sent from a port other than 5353 is answered by unicast straight to
that port, at once. Two ordinary ways of asking fail a fresh browser on a
machine where several processes run zeroconf:

- a QU question (zeroconf's default first query) is answered by unicast to
  port 5353, which all those processes share with ``SO_REUSEPORT``: the kernel
  hands the answer to one of them, often not the one that asked;
- a QM question is answered by multicast, but a responder ignores a query
  identical to one it saw in the last 0.8 s and multicasts a record at most
  once a second, so a browser started just after another waits for its own
  second query, about 1.1 s later.

So the browser also sends one query from an ephemeral port on each interface,
and feeds the answers into its zeroconf cache, as if they had arrived on port
5353: the ``ServiceBrowser`` then reports them like any other. IPv4 only; the
continuous querying of the ``ServiceBrowser`` covers everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from zeroconf import DNSIncoming, DNSOutgoing, DNSQuestion, Zeroconf  # type: ignore[attr-defined]  # public, not in __all__

from discovery._probe import multicast_socket

__all__ = ["one_shot_query"]

log = logging.getLogger(__name__)

_MDNS_GROUP = ("224.0.0.251", 5353)
_FLAGS_QUERY = 0x0000  # DNS header flags of a query (RFC 1035 §4.1.1)
_TYPE_PTR = 12  # RFC 1035 §3.2.2
_CLASS_IN = 1


class _Answers(asyncio.DatagramProtocol):
    def __init__(self, zc: Zeroconf, query_id: int) -> None:
        self.zc = zc
        self.query_id = query_id

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # on the zeroconf loop
        msg = DNSIncoming(data, addr)
        if not msg.valid or not msg.is_response() or msg.id != self.query_id or self.zc.done:
            return
        self.zc.record_manager.async_updates_from_response(msg)

    def error_received(self, exc: Exception) -> None:
        log.debug("one-shot mDNS query: %s", exc)


async def one_shot_query(
    zc: Zeroconf, service_type: str, addresses: list[str], window: float = 1.0,
    on_sent: Callable[[], None] | None = None,
) -> None:
    """Ask for ``service_type`` from an ephemeral port on each IPv4 address; cache the answers.

    Runs on the zeroconf loop and returns after ``window`` seconds (or when cancelled).
    An interface that refuses (no multicast route, address gone) is skipped. ``on_sent`` is
    called once the queries are out (or none could be sent).
    """
    loop = asyncio.get_running_loop()
    query_id = random.randint(1, 0xFFFF)  # noqa: S311 - matches answers, not a secret
    out = DNSOutgoing(_FLAGS_QUERY, False, query_id)  # multicast=False: keep the id (zeroconf zeroes it otherwise)
    out.add_question(DNSQuestion(service_type, _TYPE_PTR, _CLASS_IN))
    packets = out.packets()
    transports: list[asyncio.DatagramTransport] = []
    try:
        for addr in addresses:
            if ":" in addr:
                continue
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Answers(zc, query_id), sock=multicast_socket(addr)
                )
            except OSError as exc:
                log.debug("one-shot mDNS query on %s: %s", addr, exc)
                continue
            transports.append(transport)
            for packet in packets:
                transport.sendto(packet, _MDNS_GROUP)
        if on_sent is not None:
            on_sent()
        if transports:
            await asyncio.sleep(window)
    finally:
        for transport in transports:
            with contextlib.suppress(Exception):
                transport.close()
