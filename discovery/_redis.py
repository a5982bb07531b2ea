"""The Redis registry: discovery across networks that do not carry multicast.

An advertiser ``SET``s ``<prefix><name>`` (default prefix ``mesh:servers:``) to
the JSON form of its record (:mod:`discovery._record`, plus ``ttl``) with an
expiry of ``ttl`` seconds, and refreshes it every ``ttl / 3`` seconds from a
background thread; ``close()`` deletes it. A crashed server's key therefore
disappears within ``ttl`` seconds.

Browsers ``SCAN`` the prefix at most once per ``interval``. Redis being down is
logged (once per outage), never raised from a read, and the registry recovers
by itself when Redis returns. The ``redis`` package is imported only here, and
only when a URL is given.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from discovery._record import ServerRecord, record_from_dict, record_to_dict

__all__ = ["DEFAULT_PREFIX", "RedisPublisher", "RedisScanner", "import_redis"]

log = logging.getLogger("discovery")

DEFAULT_PREFIX = "mesh:servers:"
_CONNECT_TIMEOUT = 1.0  # s
_IO_TIMEOUT = 2.0  # s
_MAX_BACKOFF = 5.0  # s between scans while Redis is down


def import_redis() -> Any:
    """The ``redis`` module.

    Raises:
        ImportError: it is not installed; the message says how to install it.
    """
    try:
        import redis
    except ImportError:
        raise ImportError(
            "a Redis discovery URL was given but the 'redis' package is not installed; "
            "install it with: pip install 'zmq-agent-mesh[redis]'"
        ) from None
    return redis


def _client(url: str) -> Any:
    redis = import_redis()
    return redis.Redis.from_url(url, socket_connect_timeout=_CONNECT_TIMEOUT, socket_timeout=_IO_TIMEOUT)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class _Outage:
    """Log the first failure of an outage as a warning and its end as info."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.down = False

    def failed(self, exc: BaseException) -> None:
        if not self.down:
            log.warning("%s: Redis unavailable (%s); will retry", self.what, exc)
        else:
            log.debug("%s: Redis still unavailable (%s)", self.what, exc)
        self.down = True

    def ok(self) -> None:
        if self.down:
            log.info("%s: Redis is back", self.what)
        self.down = False


class RedisPublisher:
    """Keep one server's key alive in Redis.

    Args:
        url: Redis URL, e.g. ``redis://host:6379/0``.
        record: the record to publish.
        ttl: key expiry in seconds; refreshed every ``ttl / 3``.
        prefix: key prefix.

    Raises:
        ImportError: the ``redis`` package is missing.
    """

    def __init__(self, url: str, record: ServerRecord, ttl: float, prefix: str = DEFAULT_PREFIX) -> None:
        if ttl <= 0:
            raise ValueError(f"redis_ttl must be positive, not {ttl!r}")
        self._redis = import_redis()
        self._client = _client(url)
        self.key = prefix + record.name
        self._value = json.dumps(record_to_dict(record, ttl=ttl)).encode()
        self._ttl_ms = max(1, int(ttl * 1000))
        self._interval = ttl / 3
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._outage = _Outage(f"publishing {self.key}")

    def _set(self) -> None:
        try:
            self._client.set(self.key, self._value, px=self._ttl_ms)
        except (self._redis.RedisError, OSError) as exc:
            self._outage.failed(exc)
        else:
            self._outage.ok()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._set()

    def start(self) -> None:
        """Write the key now (a failure is logged), then refresh it in the background."""
        self._set()
        self._thread = threading.Thread(target=self._run, name=f"discovery-redis-{self.key}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop refreshing and delete the key if it still holds our value. Idempotent."""
        self._stop.set()
        if self._thread is None:  # never started, or already closed: nothing was written by us since
            self._client.close()
            return
        self._thread.join()
        self._thread = None
        try:
            if self._client.get(self.key) == self._value:  # another server may have taken the name since
                self._client.delete(self.key)
        except (self._redis.RedisError, OSError) as exc:
            log.warning("could not delete %s from Redis: %s (it expires by itself)", self.key, exc)
        finally:
            self._client.close()


class RedisScanner:
    """Read every published server, at most once per ``interval`` seconds.

    Raises:
        ImportError: the ``redis`` package is missing.
    """

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX, interval: float = 1.0) -> None:
        self._redis = import_redis()
        self._client = _client(url)
        self._pattern = _glob_escape(prefix) + "*"
        self._interval = interval
        self._lock = threading.Lock()
        self._next = 0.0
        self._backoff = interval
        self._cached: list[ServerRecord] = []
        self._outage = _Outage(f"reading servers from {url}")

    def records(self) -> list[ServerRecord]:
        """The published servers (cached for ``interval``; empty while Redis is down)."""
        with self._lock:
            now = time.monotonic()
            if now < self._next:
                return self._cached
            try:
                keys = list(self._client.scan_iter(match=self._pattern, count=500))
                values = self._client.mget(keys) if keys else []
            except (self._redis.RedisError, OSError) as exc:
                self._outage.failed(exc)
                self._cached = []
                self._next = time.monotonic() + self._backoff
                self._backoff = min(self._backoff * 2, _MAX_BACKOFF)
                return self._cached
            self._outage.ok()
            self._backoff = self._interval
            out = []
            for key, value in zip(keys, values, strict=True):
                if value is None:
                    continue  # expired between SCAN and MGET
                try:
                    out.append(record_from_dict(json.loads(value), "redis"))
                except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
                    log.debug("ignoring malformed Redis entry %r: %s", key, exc)
            self._cached = out
            self._next = time.monotonic() + self._interval
            return out

    def close(self) -> None:
        """Close the connection pool. Idempotent."""
        self._client.close()
