"""Addresses and timeouts shared by the host and the workers."""

from __future__ import annotations

import os
import socket

__all__ = ["heartbeat_default", "local_ip_towards", "split_address"]


def heartbeat_default() -> float:
    try:
        return float(os.environ.get("MESH_HEARTBEAT_TIMEOUT", "3"))
    except ValueError:
        return 3.0


def split_address(address: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``"host:port"``, ``"tcp://host:port"``, ``"[::1]:port"`` -> (host, port)."""
    text = str(address).strip()
    if text.startswith("tcp://"):
        text = text[len("tcp://"):]
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError(f"address {address!r} is not host:port")
    host = host.strip("[]") or default_host
    if host == "localhost":
        host = "127.0.0.1"
    return host, int(port)


def local_ip_towards(host: str, port: int) -> str:
    """The address of this machine's interface that routes to ``host`` (loopback for loopback)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError:
        return "127.0.0.1"
    family, _, _, _, sockaddr = infos[0]
    if sockaddr[0].startswith("127.") or sockaddr[0] == "::1":
        return sockaddr[0]
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect(sockaddr)
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"
