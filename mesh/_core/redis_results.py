"""Results in Redis, as both sides read them: keys, the signed blob format, and :func:`fetch`.

* ``mesh:result:<task>`` holds one result, a msgpack blob ``[header, body, [buffers...]]``.
  Task ids are globally unique, so any peer that knows a task id and the Redis URL can read
  it, the producer being down included (:func:`fetch`, used by a consumer whose producer is
  unreachable).
* With a shared ``secret``, each blob is signed (HMAC-SHA256 over the task id and the blob,
  with a key derived from the secret): a reader that holds the secret refuses a result it did
  not sign, so whoever can write to Redis cannot slip a forged (pickled) value to a peer that
  unpickles it.

The server's writer side (``mesh.server._store_redis``) packs with :func:`pack`; both sides
unpack with :func:`unpack`. redis-py is an optional dependency, imported on first use.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgpack

from mesh._core.wire import Entry

try:
    from _operator import _compare_digest  # hmac.compare_digest, without importing hmac (and OpenSSL)
except ImportError:  # pragma: no cover  (not CPython)
    from hmac import compare_digest as _compare_digest

__all__ = ["RedisPoolError", "close_fetch_clients", "fetch", "mac_key", "make_client", "pack", "redis_module",
           "result_key", "safe_url", "unpack"]

TIMEOUT = 2.0  # seconds: connecting to Redis and waiting for a reply
_SIGNED = b"MSH1"  # signed blob: _SIGNED + 32-byte HMAC + msgpack (a msgpack array never starts with "M")
_MAC_LEN = 32
_MISSING = "{} needs the redis package: pip install 'zmq-agent-mesh[redis]'"


def result_key(task: str) -> str:
    """The Redis key of a task's result."""
    return f"mesh:result:{task}"


class RedisPoolError(RuntimeError):
    """The Redis server of a result pool cannot be used (down, hung, refusing) or gave a forged result."""


def redis_module(user: str = "pool_type='redis'") -> Any:
    """The ``redis`` package, or an ``ImportError`` that names the extra (and ``user``, what needs it)."""
    try:
        import redis
    except ImportError as exc:
        raise ImportError(_MISSING.format(user)) from exc
    return redis


def safe_url(url: str) -> str:
    """``url`` with its password masked, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if parts.port is not None:
            host += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return "<unparseable redis url>"


def make_client(url: str, socket_timeout: float | None = None) -> Any:
    """A redis-py client whose failures are quick and whose stale connections heal.

    redis-py's default retries (10, with backoff) would turn a hung Redis into a
    hang of tens of seconds; here a broken connection is retried once at once
    (the common case: Redis restarted since the connection was made), and a
    timeout is not retried.
    """
    redis = redis_module()
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url,
        socket_connect_timeout=TIMEOUT,
        socket_timeout=TIMEOUT if socket_timeout is None else socket_timeout,
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        retry_on_timeout=False,
    )


def mac_key(secret: bytes | str) -> bytes:
    """The key that signs results in Redis, derived from the mesh's shared secret."""
    if isinstance(secret, str):
        secret = secret.encode()
    import hashlib  # here, not at the top: a plain server (no Redis pool) never loads OpenSSL's libcrypto

    return hashlib.blake2b(secret, digest_size=32, person=b"zmq-agent-mesh", salt=b"redis-pool").digest()


def _mac(key: bytes, task: str, packed: bytes) -> bytes:
    import hashlib
    import hmac

    m = hmac.new(key, task.encode() + b"\0", hashlib.sha256)
    m.update(packed)
    return m.digest()


def pack(task: str, entry: Entry, key: bytes | None) -> bytes:
    header, body, buffers = entry
    packed = msgpack.packb([header, bytes(body), [bytes(b) for b in buffers]], use_bin_type=True)
    if key is None:
        return packed
    return b"".join((_SIGNED, _mac(key, task, packed), packed))


def unpack(task: str, blob: bytes, key: bytes | None, where: str) -> Entry:
    if blob[:4] == _SIGNED:
        packed = memoryview(blob)[4 + _MAC_LEN:]
        if key is not None and not _compare_digest(blob[4:4 + _MAC_LEN], _mac(key, task, packed)):
            raise RedisPoolError(
                f"result {task} in the pool at {where} is not signed with this mesh's secret: "
                "refused (written by a peer without the secret, or tampered with)"
            )
    elif key is not None:
        raise RedisPoolError(
            f"result {task} in the pool at {where} is unsigned, but this mesh has a secret: refused "
            "(written by a server without the secret, or by someone else)"
        )
    else:
        packed = blob
    try:
        header, body, buffers = msgpack.unpackb(packed, raw=False)
        if not isinstance(header, dict) or not isinstance(body, bytes) or not isinstance(buffers, list):
            raise TypeError("not [header, body, buffers]")
    except Exception as exc:
        raise RedisPoolError(f"result {task} in the pool at {where} is malformed: {exc}") from exc
    return header, body, buffers



_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def fetch(url: str, task: str, *, secret: bytes | str | None = None) -> Entry | None:
    """Read a result straight from a pool's Redis (for a consumer whose producer is down).

    One client per URL is kept for the life of the process (thread-safe).

    Args:
        url: the producer's pool (``pool`` in its ``create`` reply).
        task: the task id.
        secret: the mesh's shared secret, if it has one: a result not signed with it is refused.

    Returns:
        The entry ``(header, body, buffers)``, or None when Redis holds no such result.

    Raises:
        RedisPoolError: Redis is down or hung, or the result is forged or malformed.
        ImportError: redis-py is not installed.
    """
    redis = redis_module()
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = _clients[url] = make_client(url)
    try:
        blob = client.get(result_key(task))
    except (redis.RedisError, OSError) as exc:
        raise RedisPoolError(f"result pool at {safe_url(url)}: cannot read a result: {type(exc).__name__}: {exc}") from exc
    return None if blob is None else unpack(task, blob, mac_key(secret) if secret else None, safe_url(url))


def close_fetch_clients() -> None:
    """Close the clients that :func:`fetch` keeps (e.g. at ``mesh.shutdown()``)."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        try:
            client.close()
        except Exception:  # noqa: BLE001
            pass
