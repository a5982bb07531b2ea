"""Result pool in Redis: results outlive the server that produced them.

Keys: ``mesh:result:<task>`` holds one msgpack blob ``[header, body, [buffers]]``
with the pool's expiry; task ids are globally unique, so any peer that knows a
task id and the Redis URL can read it, the producer being down included
(:func:`fetch`). A per-server sorted set ``mesh:pool:<name>`` counts the
server's live results.

redis-py is an optional dependency (``pip install 'zmq-agent-mesh[redis]'``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import msgpack

__all__ = ["RedisPool", "RedisPoolError", "fetch"]

_TIMEOUT = 2.0  # seconds: a Redis that is down gives an error quickly, never a hang


class RedisPoolError(RuntimeError):
    """The Redis server of a result pool cannot be used."""


def _client(url: str) -> Any:
    try:
        import redis
    except ImportError:
        raise RedisPoolError("pool_type='redis' needs the redis package: pip install 'zmq-agent-mesh[redis]'") from None
    return redis.Redis.from_url(url, socket_connect_timeout=_TIMEOUT, socket_timeout=_TIMEOUT, health_check_interval=10)


def _pack(entry: tuple) -> bytes:
    header, body, buffers = entry
    return msgpack.packb([header, bytes(body), [bytes(b) for b in buffers]], use_bin_type=True)


def _unpack(blob: bytes) -> tuple:
    header, body, buffers = msgpack.unpackb(blob, raw=False)
    return header, body, list(buffers)


class RedisPool:
    """A result pool kept in Redis.

    Args:
        url: ``redis://host:port/db``.
        max_expire_time: seconds a result lives.
        namespace: the server's name (its count of results).
    """

    def __init__(self, url: str, *, max_expire_time: float = 7200, namespace: str = "mesh") -> None:
        self.url = url
        self.max_expire_time = max_expire_time
        self._index = f"mesh:pool:{namespace}"
        self._redis = _client(url)

    def _call(self, what: str, fn: Any) -> Any:
        try:
            return fn()
        except RedisPoolError:
            raise
        except Exception as exc:  # redis.ConnectionError, TimeoutError, ...
            raise RedisPoolError(f"result pool at {self.url}: cannot {what}: {exc}") from exc

    def put(self, task: str, entry: tuple) -> None:
        blob = _pack(entry)
        ms = max(1, int(self.max_expire_time * 1000))
        now = time.time()

        def run() -> None:
            pipe = self._redis.pipeline()
            pipe.set(f"mesh:result:{task}", blob, px=ms)
            pipe.zadd(self._index, {task: now + self.max_expire_time})
            pipe.zremrangebyscore(self._index, "-inf", now)
            pipe.execute()

        self._call("store a result", run)

    def get(self, task: str) -> tuple | None:
        blob = self._call("read a result", lambda: self._redis.get(f"mesh:result:{task}"))
        return None if blob is None else _unpack(blob)

    def release(self, task: str) -> None:
        def run() -> None:
            pipe = self._redis.pipeline()
            pipe.delete(f"mesh:result:{task}")
            pipe.zrem(self._index, task)
            pipe.execute()

        self._call("release a result", run)

    def __len__(self) -> int:
        try:
            return int(self._redis.zcount(self._index, time.time(), "+inf"))
        except Exception:
            return 0

    def close(self) -> None:
        """Close the connections; the results stay in Redis (they outlive the server)."""
        try:
            self._redis.close()
        except Exception:
            pass


_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def fetch(url: str, task: str) -> tuple | None:
    """Read a result straight from a pool's Redis (the producer may be down).

    Raises:
        RedisPoolError: Redis cannot be reached.
    """
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = _clients[url] = _client(url)
    try:
        blob = client.get(f"mesh:result:{task}")
    except Exception as exc:
        raise RedisPoolError(f"result pool at {url}: cannot read a result: {exc}") from exc
    return None if blob is None else _unpack(blob)
