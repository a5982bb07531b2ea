"""Server addresses: one spelling (``tcp://host:port``, IPv6 in brackets) and the checks on hosts."""

from __future__ import annotations

import ipaddress
import socket

__all__ = ["check_resolves", "is_loopback", "normalize_address"]


def normalize_address(host: str | None, port: int | str | None = None) -> str:
    """``tcp://host:port`` from ``host`` + ``port``, ``"host:port"`` or ``"tcp://host:port"``.

    The one IPv6 rule: a host with a ``:`` is written in brackets, ``tcp://[::1]:5555``.

    Raises:
        ValueError: the address is incomplete or malformed.
    """
    if host is None:
        raise ValueError("no host given")
    text = str(host).strip()
    if text.startswith("tcp://"):
        text = text[6:]
    if port is None:
        if text.startswith("["):
            h, _, p = text[1:].partition("]:")
        else:
            h, _, p = text.rpartition(":")
        if not h or not p:
            raise ValueError(f"address {host!r} has no port: use 'host:port' or pass port=")
        text, port = h, p
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise ValueError(f"port {port!r} is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range")
    if text in ("localhost", ""):
        text = "127.0.0.1"
    if ":" in text and not text.startswith("["):
        text = f"[{text}]"
    return f"tcp://{text}:{port}"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_resolves(address: str) -> None:
    """A host name that does not resolve fails at once, saying so (libzmq would only retry).

    Raises:
        OSError: the host of ``address`` (a normalized address) does not resolve.
    """
    host = address[len("tcp://"):].rpartition(":")[0].strip("[]")
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    socket.getaddrinfo(host, None)
