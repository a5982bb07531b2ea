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

import zmq
from zmq.utils import z85

try:  # the C module: ``hashlib`` would load OpenSSL's libcrypto too (1.5-3 MiB of a plain server's memory)
    from _blake2 import blake2b
except ImportError:  # pragma: no cover  (not CPython)
    from hashlib import blake2b

__all__ = ["Keys", "derive_keys", "secret_from_env", "read_secret_file"]

ZAP_ENDPOINT = "inproc://zeromq.zap.01"


class Keys:
    """z85-encoded CURVE keys derived from a shared secret (immutable; equal when all four are).

    A frozen dataclass's behaviour written out: ``dataclasses`` imports ``inspect`` (with ``ast`` and
    ``dis``), ~0.7 MiB of every server's and client's memory for one small class.
    """

    _FIELDS = ("server_public", "server_secret", "client_public", "client_secret")
    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes

    def __init__(self, server_public: bytes, server_secret: bytes, client_public: bytes, client_secret: bytes) -> None:
        self.__dict__.update(server_public=server_public, server_secret=server_secret,
                             client_public=client_public, client_secret=client_secret)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}")

    def _values(self) -> tuple[bytes, ...]:
        return tuple(self.__dict__[name] for name in self._FIELDS)

    def __eq__(self, other: object) -> bool:
        return self._values() == other._values() if type(other) is type(self) else NotImplemented  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return f"Keys({', '.join(f'{name}={self.__dict__[name]!r}' for name in self._FIELDS)})"

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
