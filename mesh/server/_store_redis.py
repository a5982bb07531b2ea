"""The server's result store with a Redis copy: results outlive the server that produced them.

Keys (the result keys and the signed blob format are :mod:`mesh._core.redis_results`, which
consumers read too):

* ``mesh:result:<task>`` holds one result, with the pool's expiry.
* ``mesh:pool:<namespace>`` is a sorted set of one server's task ids scored by
  their expiry time: ``len(pool)`` counts that server's live results (several
  servers may share one Redis). It is trimmed on every put and expires itself
  once all its results have.

A Redis that is down, hung or gone gives a :class:`RedisPoolError` naming the
URL within about ``redis_results.TIMEOUT`` seconds, never a hang; the pool reconnects by
itself when Redis returns.

A server does not use :class:`RedisPool` directly: :class:`RedisBackedPool`
keeps every result in memory (a :class:`~mesh.server._store.LocalPool`, which answers
the server's own readers) and copies it to Redis from one background thread,
so Redis is never on an actor's turn nor on the I/O thread, and a Redis that is
down or hung costs only the copies (readers of a live producer still get its
results from memory). redis-py is an optional dependency
(``pip install 'zmq-agent-mesh[redis]'``), imported when a pool is first made.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from typing import Any

from mesh._core import redis_results
from mesh._core.redis_results import Entry, RedisPoolError, mac_key, make_client, pack, redis_module, safe_url, unpack

__all__ = ["RedisBackedPool", "RedisPool", "RedisPoolError"]

log = logging.getLogger("mesh.server")

BULK_SIZE = 4 * 2**20  # blobs above this are sent by a client with a longer timeout...
BULK_TIMEOUT = 60.0  # ...because a socket's timeout bounds a whole sendall() of the blob
WRITE_QUEUE_MAX = 100_000  # copies to Redis waiting for the writer; past it the oldest copy is skipped
WRITE_QUEUE_BYTES = 256 * 2**20  # ... or past this many bytes of values waiting
WRITE_BATCH = 256  # copies sent to Redis in one pipeline


class RedisPool:
    """A result pool kept in Redis (see the module's docstring for the keys).

    Thread-safe: redis-py's clients share a pool of connections.

    Args:
        url: ``redis://[[user]:password@]host:port/db`` (also ``rediss://``, ``unix://``).
        max_expire_time: seconds a result lives.
        namespace: the server's name: its results are counted under ``mesh:pool:<namespace>``.
        max_len: most results of this server kept (the oldest go first); ``None``: no bound but
            the expiry (and Redis' own ``maxmemory``).
        secret: the mesh's shared secret: results are signed with it and a result not signed
            with it is refused.

    Raises:
        ImportError: redis-py is not installed.
        ValueError: a bad URL or bound.
    """

    def __init__(
        self,
        url: str,
        *,
        max_expire_time: float = 7200,
        namespace: str = "mesh",
        max_len: int | None = None,
        secret: bytes | str | None = None,
    ) -> None:
        if max_expire_time <= 0:
            raise ValueError("max_expire_time must be positive")
        if max_len is not None and max_len < 1:
            raise ValueError("max_len must be at least 1")
        self.url = url
        self.where = safe_url(url)
        self.max_expire_time = max_expire_time
        self.max_len = max_len
        self.index = f"mesh:pool:{namespace}"
        self._key = mac_key(secret) if secret else None
        self._redis = make_client(url)
        self._bulk: Any = None
        self._lock = threading.Lock()
        self._errors = (redis_module().RedisError, OSError)

    @staticmethod
    def key(task: str) -> str:
        """The Redis key of a task's result."""
        return redis_results.result_key(task)

    def _fail(self, what: str, exc: BaseException) -> RedisPoolError:
        return RedisPoolError(f"result pool at {self.where}: cannot {what}: {type(exc).__name__}: {exc}")

    def _bulk_client(self) -> Any:
        with self._lock:
            if self._bulk is None:
                self._bulk = make_client(self.url, BULK_TIMEOUT)
            return self._bulk

    def put(self, task: str, entry: Entry) -> None:
        """Store a result (replacing any of the same task).

        Raises:
            RedisPoolError: Redis is down, hung or refuses the write.
        """
        blob = pack(task, entry, self._key)
        client = self._redis if len(blob) <= BULK_SIZE else self._bulk_client()
        try:
            self._commit(client, [(task, blob)])
        except self._errors as exc:
            raise self._fail("store a result", exc) from exc

    def write(self, batch: list[tuple[str, Entry | None]]) -> None:
        """Store and delete results in one round trip: ``(task, entry)`` stores, ``(task, None)`` deletes.

        Entries whose blob is over :data:`BULK_SIZE` go one by one on the bulk client.

        Raises:
            RedisPoolError: Redis is down, hung or refuses the write.
        """
        small: list[tuple[str, bytes | None]] = []
        for task, entry in batch:
            if entry is None:
                small.append((task, None))
                continue
            blob = pack(task, entry, self._key)
            if len(blob) > BULK_SIZE:
                self.put(task, entry)
            else:
                small.append((task, blob))
        if not small:
            return
        try:
            self._commit(self._redis, small, transaction=False)
        except self._errors as exc:
            raise self._fail("store results", exc) from exc

    def _commit(self, client: Any, items: list[tuple[str, bytes | None]], transaction: bool = True) -> None:
        """One pipeline: store ``(task, blob)``, delete ``(task, None)``; trim the index to the expiry and max_len."""
        ttl = self.max_expire_time
        now = time.time()
        pipe = client.pipeline(transaction=transaction)
        for task, blob in items:
            if blob is None:
                pipe.delete(self.key(task))
                pipe.zrem(self.index, task)
            else:
                pipe.set(self.key(task), blob, px=max(1, int(ttl * 1000)))
                pipe.zadd(self.index, {task: now + ttl})
        pipe.zremrangebyscore(self.index, "-inf", now)
        pipe.expire(self.index, math.ceil(ttl) + 1)
        pipe.zcard(self.index)
        count = pipe.execute()[-1]
        if self.max_len is not None and count > self.max_len:
            old = [t.decode() for t, _ in self._redis.zpopmin(self.index, count - self.max_len)]
            if old:
                self._redis.delete(*(self.key(t) for t in old))

    def get(self, task: str) -> Entry | None:
        """The result of ``task``, or None when there is none (never stored, expired, released).

        Raises:
            RedisPoolError: Redis is down or hung, or the stored result is forged or malformed.
        """
        try:
            blob = self._redis.get(self.key(task))
        except self._errors as exc:
            raise self._fail("read a result", exc) from exc
        return None if blob is None else unpack(task, blob, self._key, self.where)

    def release(self, task: str) -> None:
        """Forget a result (nothing happens if there is none).

        Raises:
            RedisPoolError: Redis is down or hung.
        """
        try:
            pipe = self._redis.pipeline()
            pipe.delete(self.key(task))
            pipe.zrem(self.index, task)
            pipe.execute()
        except self._errors as exc:
            raise self._fail("release a result", exc) from exc

    def __len__(self) -> int:
        """This server's live results; 0 when Redis cannot be reached (a count is not worth an error)."""
        try:
            return int(self._redis.zcount(self.index, f"({time.time()}", "+inf"))
        except self._errors:
            return 0

    def ping(self) -> None:
        """Check that Redis answers.

        Raises:
            RedisPoolError: it does not.
        """
        try:
            self._redis.ping()
        except self._errors as exc:
            raise self._fail("reach Redis", exc) from exc

    def close(self) -> None:
        """Close the connections. The results stay in Redis: they outlive the server."""
        with self._lock:
            bulk, self._bulk = self._bulk, None
        for client in (self._redis, bulk):
            if client is not None:
                try:
                    client.close()
                except Exception:  # noqa: BLE001 - closing must not fail a shutdown
                    pass

    def __repr__(self) -> str:
        return f"<RedisPool {self.where} {self.index}>"



class RedisBackedPool:
    """A server's pool with a Redis copy: memory answers, Redis outlives the server.

    ``put``, ``release``, ``loosen`` and ``get`` act on the in-memory pool at
    once and never touch the network; copies (and deletes) go to Redis in
    order from one writer thread, in batches. While Redis is down or hung they
    wait in a bounded queue (:data:`WRITE_QUEUE_MAX` entries,
    :data:`WRITE_QUEUE_BYTES` bytes; past it the oldest copy is skipped) and a
    batch that fails is skipped, with one warning per outage. :meth:`get_stored`
    reads Redis (blocking, up to ``redis_results.TIMEOUT``): for results this server no
    longer has in memory, e.g. those of an earlier run.
    """

    def __init__(self, memory: Any, store: RedisPool) -> None:
        self.memory = memory
        self.store = store
        self.max_len = memory.max_len
        self.max_expire_time = memory.max_expire_time
        self._queue: OrderedDict[str, Entry | None] = OrderedDict()  # task -> entry to copy, None to delete
        self._queued_bytes = 0
        self._cv = threading.Condition()
        self._closed = False
        self._busy = False
        self.skipped = 0  # copies never written (queue full, or Redis failed)
        self._failing = False
        self._thread = threading.Thread(target=self._write_loop, name=f"mesh-redis-writer-{store.index}", daemon=True)
        self._thread.start()

    # -- the in-memory side (any thread, never blocks on the network) ----------
    def put(self, task: str, entry: Entry, *, held: bool = False) -> None:
        self.memory.put(task, entry, held=held)
        self._enqueue(task, entry)

    def get(self, task: str) -> Entry | None:
        return self.memory.get(task)

    def release(self, task: str) -> None:
        self.memory.release(task)
        self._enqueue(task, None)

    def loosen(self, task: str) -> None:
        self.memory.loosen(task)

    def __len__(self) -> int:
        return len(self.memory)

    @property
    def nbytes(self) -> int:
        return self.memory.nbytes

    # -- Redis ----------------------------------------------------------------
    def get_stored(self, task: str) -> Entry | None:
        """The copy in Redis (blocking, at most about ``redis_results.TIMEOUT`` s).

        Raises:
            RedisPoolError: Redis is down or hung, or the copy is forged or malformed.
        """
        return self.store.get(task)

    def ping(self) -> None:
        self.store.ping()

    def _enqueue(self, task: str, entry: Entry | None) -> None:
        size = 0 if entry is None else len(entry[1]) + sum(len(b) for b in entry[2])
        with self._cv:
            if self._closed:
                return
            old = self._queue.pop(task, None)
            if old is not None:
                self._queued_bytes -= len(old[1]) + sum(len(b) for b in old[2])
            # a delete replaces a copy not written yet, and still goes: an older copy may be there
            self._queue[task] = entry
            self._queued_bytes += size
            while len(self._queue) > WRITE_QUEUE_MAX or self._queued_bytes > WRITE_QUEUE_BYTES:
                first, dropped = self._queue.popitem(last=False)
                if dropped is not None:
                    self._queued_bytes -= len(dropped[1]) + sum(len(b) for b in dropped[2])
                    self.skipped += 1
            self._cv.notify_all()  # the writer (a flush() may be waiting too)

    def _write_loop(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if not self._queue:
                    return
                batch = []
                while self._queue and len(batch) < WRITE_BATCH:
                    task, entry = self._queue.popitem(last=False)
                    if entry is not None:
                        self._queued_bytes -= len(entry[1]) + sum(len(b) for b in entry[2])
                    batch.append((task, entry))
                self._busy = True
            try:
                self.store.write(batch)
                if self._failing:
                    self._failing = False
                    log.warning("result pool at %s is back: copying results to Redis again", self.store.where)
            except Exception as exc:  # noqa: BLE001 - Redis down or hung: the results stay in memory
                self.skipped += sum(1 for _, e in batch if e is not None)
                if not self._failing:
                    self._failing = True
                    log.warning("%s; results stay in this server's memory, their Redis copies are skipped until it answers", exc)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until every queued copy has been tried; True if the queue is empty."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def close(self, grace: float = 2.0) -> None:
        """Write what is queued (within ``grace`` seconds), then close the connections."""
        self.flush(grace)
        with self._cv:
            self._closed = True
            self._queue.clear()
            self._queued_bytes = 0
            self._cv.notify_all()
        self._thread.join(redis_results.TIMEOUT + 1)
        self.memory.close()
        self.store.close()

    def __repr__(self) -> str:
        return f"<RedisBackedPool {self.store.where} {self.store.index}>"
