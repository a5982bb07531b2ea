"""Result pools: where a server keeps the results of async calls until fetched.

An entry is the encoded reply (header fields, body, buffers), so a result
fetched many times is encoded once. ``local`` keeps them in memory, bounded
by ``max_len`` entries and ``max_expire_time`` seconds; ``redis`` keeps them
in a Redis server (see :mod:`mesh._pool_redis`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Protocol

__all__ = ["Entry", "LocalPool", "ResultPool", "make_pool"]

# (reply header fields, body bytes, buffers)
Entry = tuple[dict[str, Any], bytes, list[bytes]]


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
    """

    def __init__(self, max_len: int = 10000, max_expire_time: float = 7200) -> None:
        if max_len < 1:
            raise ValueError("max_len must be at least 1")
        if max_expire_time <= 0:
            raise ValueError("max_expire_time must be positive")
        self.max_len = max_len
        self.max_expire_time = max_expire_time
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[float, Entry]] = OrderedDict()

    def put(self, task: str, entry: Entry) -> None:
        now = time.monotonic()
        with self._lock:
            self._items[task] = (now + self.max_expire_time, entry)
            self._items.move_to_end(task)
            self._evict(now)

    def get(self, task: str) -> Entry | None:
        now = time.monotonic()
        with self._lock:
            item = self._items.get(task)
            if item is None:
                return None
            if item[0] <= now:
                del self._items[task]
                return None
            return item[1]

    def release(self, task: str) -> None:
        with self._lock:
            self._items.pop(task, None)

    def _evict(self, now: float) -> None:
        items = self._items
        while len(items) > self.max_len:
            items.popitem(last=False)
        while items:
            task, (expires, _) = next(iter(items.items()))
            if expires > now:
                break
            del items[task]

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(len(e[1]) + sum(len(b) for b in e[2]) for _, e in self._items.values())

    def close(self) -> None:
        with self._lock:
            self._items.clear()


def make_pool(
    pool_type: str, *, redis_url: str | None, max_len: int, max_expire_time: float, name: str, secret: bytes | None = None
) -> ResultPool:
    """Build the pool a server was asked for.

    Raises:
        ValueError: unknown ``pool_type`` or a ``redis`` pool without ``redis_url``.
    """
    if pool_type == "local":
        return LocalPool(max_len=max_len, max_expire_time=max_expire_time)
    if pool_type == "redis":
        if not redis_url:
            raise ValueError("pool_type='redis' needs redis_url (e.g. redis://127.0.0.1:6379)")
        from mesh._pool_redis import RedisPool

        # with a secret, entries are signed: nobody without it can plant data consumers would unpickle
        return RedisPool(redis_url, max_expire_time=max_expire_time, namespace=name, secret=secret)
    raise ValueError(f"unknown pool_type {pool_type!r}: use 'local' or 'redis'")
