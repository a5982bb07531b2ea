"""Merging what the sources found into one record per server.

Two records are the same server when they have the same port and share the
connect host, or share any non-loopback address (a server bound to ``0.0.0.0``
is ``127.0.0.1`` in the local registry and ``198.18.0.1`` over mDNS). Loopback
addresses in the advertised lists are not compared: two hosts both advertise
``127.0.0.1``.

The merged record takes its host from the most specific source (local, then
mDNS, then Redis, then static), its descriptive fields (name, capacity, auth,
py, proto, pid) from the first source that has them (static peers have none),
and the union of addresses and sources.
"""

from __future__ import annotations

from collections.abc import Iterable

from discovery._hosts import is_loopback
from discovery._record import ServerRecord

__all__ = ["merge"]

_RANK = {"local": 0, "mdns": 1, "redis": 2, "static": 3, "dns": 3}


def _rank(rec: ServerRecord) -> int:
    return min((_RANK.get(s, 9) for s in rec.sources), default=9)


def _norm(host: str) -> str:
    return "127.0.0.1" if host == "localhost" else host


def merge(records: Iterable[ServerRecord]) -> list[ServerRecord]:
    """One record per server, sorted by (name, host, port)."""
    recs = list(records)
    parent = list(range(len(recs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    seen: dict[tuple[str, int], int] = {}
    for i, rec in enumerate(recs):
        keys = {(_norm(rec.host), rec.port)}
        keys.update((a, rec.port) for a in rec.addresses if not is_loopback(a.split("%")[0]))
        for key in keys:
            j = seen.setdefault(key, i)
            parent[find(i)] = find(j)

    groups: dict[int, list[ServerRecord]] = {}
    for i, rec in enumerate(recs):
        groups.setdefault(find(i), []).append(rec)

    out = []
    for members in groups.values():
        members.sort(key=_rank)
        lead = members[0]
        described = next((m for m in members if m.sources - {"static"}), lead)
        addresses = tuple(dict.fromkeys([lead.host, *(a for m in members for a in m.addresses)]))
        out.append(
            ServerRecord(
                name=described.name,
                host=lead.host,
                port=lead.port,
                capacity=described.capacity,
                auth=described.auth,
                py=described.py,
                proto=described.proto,
                pid=described.pid,
                addresses=addresses,
                sources=frozenset().union(*(m.sources for m in members)),
            )
        )
    out.sort(key=lambda r: (r.name, r.host, r.port))
    return out
