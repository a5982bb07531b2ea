"""Shared-secret security: CURVE keys derived from one secret, checked by ZAP.

Every peer that knows the secret derives the same two keypairs:

* the *server* keypair, whose secret half only secret holders can compute, so
  a client that completes the CURVE handshake knows the server holds the
  secret (a rogue server advertised over mDNS cannot pass);
* the *client* keypair, whose public half the server's ZAP handler accepts,
  so a server only ever reads bytes from peers that hold the secret.

CURVE then encrypts and authenticates every frame, so no byte from a peer
that has not proven the secret ever reaches the codec (and its unpickler).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import zmq
from zmq.utils import z85

try:  # the C module: ``hashlib`` would load OpenSSL's libcrypto too (1.5-3 MiB of a plain server's memory)
    from _blake2 import blake2b
except ImportError:  # pragma: no cover  (not CPython)
    from hashlib import blake2b

__all__ = ["Keys", "derive_keys", "secret_from_env", "read_secret_file"]

ZAP_ENDPOINT = "inproc://zeromq.zap.01"


@dataclass(frozen=True)
class Keys:
    """z85-encoded CURVE keys derived from a shared secret."""

    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes

    @property
    def domain(self) -> bytes:
        """ZAP domain for routers using these keys (one per distinct secret)."""
        import hashlib  # only servers and clients with a secret pay for OpenSSL

        return b"mesh-" + hashlib.sha256(self.server_public).hexdigest()[:16].encode()


def derive_keys(secret: bytes | str) -> Keys:
    """Derive the server and client CURVE keypairs from a shared secret.

    Raises:
        ValueError: the secret is empty.
    """
    if isinstance(secret, str):
        secret = secret.encode()
    if not secret:
        raise ValueError("the shared secret is empty")

    def keypair(role: bytes) -> tuple[bytes, bytes]:
        raw = blake2b(secret, digest_size=32, person=b"zmq-agent-mesh", salt=role).digest()
        sec = z85.encode(raw)
        return zmq.curve_public(sec), sec

    spub, ssec = keypair(b"server")
    cpub, csec = keypair(b"client")
    return Keys(spub, ssec, cpub, csec)


def read_secret_file(path: str) -> bytes:
    """Read a secret file (surrounding whitespace stripped).

    Raises:
        ValueError: the file is empty.
        OSError: it cannot be read.
    """
    with open(path, "rb") as fh:
        secret = fh.read().strip()
    if not secret:
        raise ValueError(f"secret file {path!r} is empty")
    return secret


def secret_from_env() -> bytes | None:
    """The secret in ``MESH_SECRET``, if any."""
    value = os.environ.get("MESH_SECRET", "")
    return value.encode() if value else None
