"""Static peers: servers named in configuration (``MESH_PEERS="host:port,host:port"``)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from discovery._record import ServerRecord, format_hostport, parse_address

__all__ = ["peers_from_env", "static_records"]

_SPLIT = re.compile(r"[,\s]+")


def peers_from_env() -> list[str]:
    """The entries of ``MESH_PEERS`` (comma or whitespace separated; empty when unset)."""
    return [p for p in _SPLIT.split(os.environ.get("MESH_PEERS", "")) if p]


def static_records(peers: Sequence[str], origin: str = "static_peers") -> list[ServerRecord]:
    """One record per peer, named ``host:port``, with ``sources == {"static"}``.

    Args:
        peers: addresses such as ``"10.0.0.5:12345"``, ``"tcp://h:p"`` or ``"[::1]:p"``.
        origin: where the list came from, for error messages.

    Raises:
        ValueError: an entry is not an address; the message names the entry.
    """
    if isinstance(peers, str):
        raise ValueError(f"{origin} must be a list of 'host:port' strings, not one string {peers!r}")
    out: dict[tuple[str, int], ServerRecord] = {}
    for entry in peers:
        try:
            host, port = parse_address(entry)
        except ValueError as exc:
            raise ValueError(f"bad entry {entry!r} in {origin}: {exc}") from None
        out.setdefault(
            (host, port),
            ServerRecord(
                name=format_hostport(host, port),
                host=host,
                port=port,
                addresses=(host,),
                sources=frozenset({"static"}),
            ),
        )
    return list(out.values())
