"""Result pools: where a server keeps the results of async calls until fetched.

An entry is the encoded reply (header fields, body, buffers), so a result
fetched many times is encoded once.

Held and loose results. A result is *held* while the session of the caller
that made the call is alive and that caller (or a copy of its future that the
server knows of) has not let it go (see :mod:`mesh.server._holders`); the server drops
it when the last holder goes, or when the caller's session ends and nobody
else holds it. A held result is bounded only by bytes: dropping it would lose
a value that a live future will read. Every other result is *loose* (its
holders cannot be tracked: the caller had no session, its session ended while
copies it passed on were still out, or the server stopped counting them) and
is bounded by ``max_len`` entries and ``max_expire_time`` seconds as well.

``local`` keeps them in memory, all of them within ``max_bytes`` (env
``MESH_POOL_MAX_BYTES``, default 1 GiB, counting values plus about
:data:`ENTRY_OVERHEAD` bytes per entry); past it, loose results go first,
oldest first, then the oldest held ones. ``redis`` keeps them in memory the
same way and also copies each to Redis, from a background thread, so that
consumers can read them while this server is down (see :mod:`mesh.server._store_redis`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Protocol

from mesh._core.options import env_count
from mesh._core.wire import Entry

__all__ = ["Entry", "LocalPool", "ResultPool", "make_pool"]

DEFAULT_MAX_BYTES = 1 << 30
ENTRY_OVERHEAD = 400  # bytes an entry costs besides its value (task id, dicts, tuples), counted in max_bytes


def _size(entry: Entry) -> int:
    buffers = entry[2]
    if not buffers:  # (the common entry: a value without buffer frames)
        return len(entry[1])
    return len(entry[1]) + sum(memoryview(b).nbytes for b in buffers)


class ResultPool(Protocol):
    def put(self, task: str, entry: Entry, *, held: bool = False) -> None: ...

    def get(self, task: str) -> Entry | None: ...

    def release(self, task: str) -> None: ...

    def loosen(self, task: str) -> None: ...

    def __len__(self) -> int: ...

    def close(self) -> None: ...


class LocalPool:
    """In-memory pool (see the module's docstring for held and loose results).

    Args:
        max_len: most loose entries kept; the oldest loose one goes when another arrives.
        max_expire_time: seconds a loose entry lives (counted from when it became loose).
        max_bytes: most bytes kept, held entries included (values plus :data:`ENTRY_OVERHEAD`
            per entry); loose entries go first, then the oldest held ones, but the newest
            entry stays even if it alone is larger.
        entry_overhead: bytes counted per entry besides its value.
    """

    def __init__(
        self,
        max_len: int = 10000,
        max_expire_time: float = 7200,
        max_bytes: int = DEFAULT_MAX_BYTES,
        entry_overhead: int = ENTRY_OVERHEAD,
    ) -> None:
        if max_len < 1:
            raise ValueError("max_len must be at least 1")
        if max_expire_time <= 0:
            raise ValueError("max_expire_time must be positive")
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.max_len = max_len
        self.max_expire_time = max_expire_time
        self.max_bytes = max_bytes
        self.entry_overhead = entry_overhead
        self._lock = threading.Lock()
        # task -> (entry, size); oldest first. Loose ones are also in _loose: task -> expiry.
        self._items: OrderedDict[str, tuple[Entry, int]] = OrderedDict()
        self._loose: OrderedDict[str, float] = OrderedDict()
        self._bytes = 0
        self.evicted_held = 0  # held results dropped past max_bytes (a value a live future may read)

    def put(self, task: str, entry: Entry, *, held: bool = False) -> None:
        """Store a result (replacing any of the same task); ``held``: see the module's docstring."""
        now = time.monotonic()
        buffers = entry[2]  # (_size, inlined: the common entry has none)
        size = (len(entry[1]) if not buffers else _size(entry)) + self.entry_overhead
        with self._lock:
            items, loose = self._items, self._loose
            old = items.pop(task, None)  # (_drop, inlined: a new task has none)
            if old is not None:
                self._bytes -= old[1]
                loose.pop(task, None)
            items[task] = (entry, size)
            self._bytes += size
            if not held:
                loose[task] = now + self.max_expire_time
            if loose or self._bytes > self.max_bytes:  # (else _evict has nothing to do)
                self._evict(now)

    def get(self, task: str) -> Entry | None:
        with self._lock:
            item = self._items.get(task)
            if item is None:
                return None
            expires = self._loose.get(task)
            if expires is not None and expires <= time.monotonic():
                self._drop(task)
                return None
            return item[0]

    def release(self, task: str) -> None:
        with self._lock:
            self._drop(task)

    def release_many(self, tasks: list[str]) -> None:
        with self._lock:  # (_drop, inlined: a release names up to 4096 tasks)
            pop, loose = self._items.pop, self._loose
            freed = 0
            for task in tasks:
                item = pop(task, None)
                if item is not None:
                    freed += item[1]
                    if loose:
                        loose.pop(task, None)
            self._bytes -= freed

    def loosen(self, task: str) -> None:
        """Nobody is known to hold ``task`` any more: bound it by ``max_len`` / ``max_expire_time`` from now."""
        now = time.monotonic()
        with self._lock:
            if task in self._items and task not in self._loose:
                self._loose[task] = now + self.max_expire_time
                self._evict(now)

    def is_held(self, task: str) -> bool:
        with self._lock:
            return task in self._items and task not in self._loose

    def _drop(self, task: str) -> None:
        # caller holds the lock
        item = self._items.pop(task, None)
        if item is not None:
            self._bytes -= item[1]
            self._loose.pop(task, None)

    def _evict(self, now: float) -> None:
        # caller holds the lock
        loose, items = self._loose, self._items
        while len(loose) > self.max_len:
            self._drop(next(iter(loose)))
        while loose:
            task, expires = next(iter(loose.items()))
            if expires > now:
                break
            self._drop(task)
        while self._bytes > self.max_bytes and len(items) > 1:
            if loose:
                self._drop(next(iter(loose)))
            else:
                self._drop(next(iter(items)))
                self.evicted_held += 1

    def __len__(self) -> int:
        return len(self._items)

    @property
    def loose(self) -> int:
        """Loose entries (bounded by max_len / max_expire_time)."""
        return len(self._loose)

    @property
    def nbytes(self) -> int:
        """Bytes counted against ``max_bytes``: values plus the overhead of each entry."""
        return self._bytes

    def close(self) -> None:
        with self._lock:
            self._items.clear()
            self._loose.clear()
            self._bytes = 0


def make_pool(
    pool_type: str,
    *,
    redis_url: str | None,
    max_len: int,
    max_expire_time: float,
    name: str,
    secret: bytes | None = None,
) -> ResultPool:
    """Build the pool a server was asked for.

    Raises:
        ValueError: unknown ``pool_type`` or a ``redis`` pool without ``redis_url``.
    """
    max_bytes = env_count("MESH_POOL_MAX_BYTES", DEFAULT_MAX_BYTES)
    if pool_type == "local":
        return LocalPool(max_len=max_len, max_expire_time=max_expire_time, max_bytes=max_bytes)
    if pool_type == "redis":
        if not redis_url:
            raise ValueError("pool_type='redis' needs redis_url (e.g. redis://127.0.0.1:6379)")
        from mesh.server._store_redis import RedisBackedPool, RedisPool  # only a Redis pool's server loads it

        # with a secret, entries are signed: nobody without it can plant data consumers would unpickle
        store = RedisPool(redis_url, max_expire_time=max_expire_time, namespace=name, secret=secret)
        return RedisBackedPool(LocalPool(max_len=max_len, max_expire_time=max_expire_time, max_bytes=max_bytes), store)
    raise ValueError(f"unknown pool_type {pool_type!r}: use 'local' or 'redis'")
