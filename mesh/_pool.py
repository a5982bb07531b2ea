"""Result pools: where a server keeps the results of async calls until fetched.

An entry is the encoded reply (header fields, body, buffers), so a result
fetched many times is encoded once. ``local`` keeps them in memory, bounded
by ``max_len`` entries, ``max_expire_time`` seconds and ``max_bytes`` of
values (env ``MESH_POOL_MAX_BYTES``, default 1 GiB); ``redis`` keeps them
in a Redis server (see :mod:`mesh._pool_redis`).
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from typing import Any, Protocol

__all__ = ["Entry", "LocalPool", "ResultPool", "make_pool"]

# (reply header fields, body bytes, buffers)
Entry = tuple[dict[str, Any], bytes, list[bytes]]

DEFAULT_MAX_BYTES = 1 << 30


def _size(entry: Entry) -> int:
    return len(entry[1]) + sum(memoryview(b).nbytes for b in entry[2])


class ResultPool(Protocol):
    def put(self, task: str, entry: Entry) -> None: ...

    def get(self, task: str) -> Entry | None: ...

    def release(self, task: str) -> None: ...

    def __len__(self) -> int: ...

    def close(self) -> None: ...


class LocalPool:
    """In-memory pool, oldest entries evicted first.

    Args:
        max_len: most entries kept; the oldest goes when a new one arrives.
        max_expire_time: seconds an entry lives.
        max_bytes: most bytes of values kept; the oldest entries go first, but
            the newest entry stays even if it alone is larger.
    """

    def __init__(self, max_len: int = 10000, max_expire_time: float = 7200, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_len < 1:
            raise ValueError("max_len must be at least 1")
        if max_expire_time <= 0:
            raise ValueError("max_expire_time must be positive")
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.max_len = max_len
        self.max_expire_time = max_expire_time
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[float, Entry, int]] = OrderedDict()
        self._bytes = 0

    def put(self, task: str, entry: Entry) -> None:
        now = time.monotonic()
        size = _size(entry)
        with self._lock:
            old = self._items.pop(task, None)
            if old is not None:
                self._bytes -= old[2]
            self._items[task] = (now + self.max_expire_time, entry, size)
            self._bytes += size
            self._evict(now)

    def get(self, task: str) -> Entry | None:
        now = time.monotonic()
        with self._lock:
            item = self._items.get(task)
            if item is None:
                return None
            if item[0] <= now:
                del self._items[task]
                self._bytes -= item[2]
                return None
            return item[1]

    def release(self, task: str) -> None:
        with self._lock:
            item = self._items.pop(task, None)
            if item is not None:
                self._bytes -= item[2]

    def _evict(self, now: float) -> None:
        items = self._items
        while len(items) > self.max_len or (self._bytes > self.max_bytes and len(items) > 1):
            self._bytes -= items.popitem(last=False)[1][2]
        while items:
            task, (expires, _, size) = next(iter(items.items()))
            if expires > now:
                break
            del items[task]
            self._bytes -= size

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        """Bytes of values held."""
        return self._bytes

    def close(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


def make_pool(
    pool_type: str, *, redis_url: str | None, max_len: int, max_expire_time: float, name: str, secret: bytes | None = None
) -> ResultPool:
    """Build the pool a server was asked for.

    Raises:
        ValueError: unknown ``pool_type`` or a ``redis`` pool without ``redis_url``.
    """
    if pool_type == "local":
        max_bytes = int(os.environ.get("MESH_POOL_MAX_BYTES", DEFAULT_MAX_BYTES))
        return LocalPool(max_len=max_len, max_expire_time=max_expire_time, max_bytes=max_bytes)
    if pool_type == "redis":
        if not redis_url:
            raise ValueError("pool_type='redis' needs redis_url (e.g. redis://127.0.0.1:6379)")
        from mesh._pool_redis import RedisPool

        # with a secret, entries are signed: nobody without it can plant data consumers would unpickle
        return RedisPool(redis_url, max_expire_time=max_expire_time, namespace=name, secret=secret)
    raise ValueError(f"unknown pool_type {pool_type!r}: use 'local' or 'redis'")
