"""The ZAP handler: which CURVE clients a secured ROUTER accepts.

libzmq asks ``inproc://zeromq.zap.01`` about every CURVE handshake on a socket
that has a ZAP domain. Each secured router's domain (one per distinct secret,
``Keys.domain``) allows exactly one client public key, the one derived from
that secret; anything else (another key, another mechanism, a malformed
request) is refused. Runs on the I/O thread.
"""

from __future__ import annotations

from typing import Any, Callable

import zmq
from zmq.utils import z85

from transport._security import ZAP_ENDPOINT, Keys

__all__ = ["Zap"]


class Zap:
    """The ZAP socket of one node and its allow-list (domain -> client public key, raw)."""

    def __init__(self, warn: Callable[..., None]) -> None:
        self.warn = warn
        self.sock: zmq.Socket | None = None
        self.keys: dict[bytes, bytes] = {}

    def allow(self, keys: Keys) -> None:
        """Accept clients holding ``keys``' secret on routers of ``keys.domain``."""
        self.keys[keys.domain] = z85.decode(keys.client_public)

    def open(self, ctx: zmq.Context) -> zmq.Socket | None:
        """Bind the ZAP socket once; returns it the first time (to poll), then None."""
        if self.sock is not None:
            return None
        sock = ctx.socket(zmq.REP)
        sock.linger = 0
        sock.bind(ZAP_ENDPOINT)
        self.sock = sock
        return sock

    def on_readable(self, _mask: Any = None) -> None:
        """Answer every waiting ZAP request."""
        assert self.sock is not None
        while True:
            try:
                msg = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            ok = False
            if len(msg) >= 7:
                version, request_id, domain, _addr, _ident, mechanism = msg[:6]
                allowed = self.keys.get(domain)
                ok = mechanism == b"CURVE" and allowed is not None and msg[6] == allowed
                reply = [version, request_id, b"200" if ok else b"400", b"OK" if ok else b"unknown key", b"", b""]
            else:
                reply = [b"1.0", msg[1] if len(msg) > 1 else b"", b"500", b"bad ZAP request", b"", b""]
            if not ok:
                self.warn("auth", "rejected a peer whose secret does not match")
            self.sock.send_multipart(reply)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None
