"""The state store of durable agents in Redis (``redis://...``), through redis-py (imported here only).

Keys, for object id ``ID``: ``mesh:durable:ID:spec``, ``:ckpt`` (the checkpoint's base), ``:log``
(a list: the deltas after it), ``:rec`` (the current activation
record), ``:gen`` (its generation, an integer), and the set ``mesh:durable:ids``. Claiming a
generation and the fenced checkpoint write are Lua scripts: compare the generation and set, in
one atomic step and one round trip (stronger than WATCH/MULTI, and cheaper).
"""

from __future__ import annotations

from typing import Any

from mesh._core.redis_results import make_client, redis_module, safe_url
from mesh._core.state_store import StateStore, StateStoreError, check_id

__all__ = ["RedisStore"]

_PREFIX = "mesh:durable:"
_IDS = _PREFIX + "ids"

# KEYS: gen, rec, ids; ARGV: new gen, record blob, object id
_CLAIM = """
local g = tonumber(redis.call('GET', KEYS[1]) or '-1')
if g + 1 ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[3])
return 1
"""
# KEYS: gen, target; ARGV: expected gen, blob
_FENCED = """
local g = redis.call('GET', KEYS[1])
if g and tonumber(g) ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""

# KEYS: gen, ckpt, log; ARGV: expected gen, base blob (a new base drops the old deltas, atomically)
_BASE = """
local g = redis.call('GET', KEYS[1])
if g and tonumber(g) ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[3])
return 1
"""
# KEYS: gen, log; ARGV: expected gen, delta blob
_DELTA = """
local g = redis.call('GET', KEYS[1])
if g and tonumber(g) ~= tonumber(ARGV[1]) then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
return 1
"""


class RedisStore(StateStore):
    def __init__(self, url: str, key: bytes = b"") -> None:
        self.url = url
        self.where = safe_url(url)
        self.key = key
        self._redis = redis_module(f"the state store {self.where}")
        self._client = make_client(url)
        self._claim_script = self._client.register_script(_CLAIM)
        self._fenced_script = self._client.register_script(_FENCED)
        self._base_script = self._client.register_script(_BASE)
        self._delta_script = self._client.register_script(_DELTA)

    def _do(self, what: str, object_id: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except (self._redis.RedisError, OSError) as exc:
            raise StateStoreError(
                f"state store {self.where}: cannot {what} of object {object_id}: {type(exc).__name__}: {exc}"
            ) from None

    @staticmethod
    def _k(object_id: str, kind: str) -> str:
        return f"{_PREFIX}{check_id(object_id)}:{kind}"

    def put(self, object_id: str, kind: str, blob: bytes) -> None:
        self._do(f"write the {kind}", object_id, self._client.set, self._k(object_id, kind), blob)

    def get(self, object_id: str, kind: str) -> bytes | None:
        return self._do(f"read the {kind}", object_id, self._client.get, self._k(object_id, kind))

    def put_fenced(self, object_id: str, kind: str, blob: bytes, gen: int) -> bool:
        keys = [self._k(object_id, "gen"), self._k(object_id, kind)]
        return bool(self._do(f"write the {kind}", object_id, self._fenced_script, keys, [gen, blob]))

    def put_checkpoint(self, object_id: str, blob: bytes, gen: int, version: int) -> bool:
        keys = [self._k(object_id, "gen"), self._k(object_id, "ckpt"), self._k(object_id, "log")]
        return bool(self._do("write the checkpoint", object_id, self._base_script, keys, [gen, blob]))

    def append_delta(self, object_id: str, blob: bytes, gen: int, base: int) -> bool:
        keys = [self._k(object_id, "gen"), self._k(object_id, "log")]
        return bool(self._do("write a checkpoint", object_id, self._delta_script, keys, [gen, blob]))

    def get_checkpoint(self, object_id: str) -> tuple[bytes | None, list[bytes]]:
        pipe = self._client.pipeline(transaction=True)  # MULTI/EXEC: the base and its deltas together
        pipe.get(self._k(object_id, "ckpt"))
        pipe.lrange(self._k(object_id, "log"), 0, -1)
        base, deltas = self._do("read the checkpoint", object_id, pipe.execute)
        return base, list(deltas) if base is not None else []

    def fence(self, object_id: str, gen: int) -> bool:
        g = self._do("read the generation", object_id, self._client.get, self._k(object_id, "gen"))
        return g is None or int(g) == gen

    def _claim(self, object_id: str, gen: int, blob: bytes) -> bool:
        keys = [self._k(object_id, "gen"), self._k(object_id, "rec"), _IDS]
        return bool(self._do("claim", object_id, self._claim_script, keys, [gen, blob, object_id]))

    def _current(self, object_id: str) -> bytes | None:
        return self._do("read the record", object_id, self._client.get, self._k(object_id, "rec"))

    def _rewrite(self, object_id: str, gen: int, blob: bytes) -> None:
        self.put_fenced(object_id, "rec", blob, gen)

    def drop(self, object_id: str) -> None:
        keys = [self._k(object_id, k) for k in ("spec", "ckpt", "log", "rec", "gen")]
        pipe = self._client.pipeline()
        pipe.delete(*keys)
        pipe.srem(_IDS, object_id)
        self._do("delete", object_id, pipe.execute)

    def ids(self) -> list[str]:
        members = self._do("list the objects", "*", self._client.smembers, _IDS)
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    def ping(self) -> None:
        self._do("reach the store", "*", self._client.ping)

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # noqa: BLE001
            pass
