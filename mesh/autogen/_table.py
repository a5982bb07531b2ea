"""The directory table as this worker sees it: who holds which agent types and subscriptions.

From it: the recipients of a topic (every matching subscription in the mesh once, subscriptions
deduplicated by (kind, topic, agent type), recipients by AgentId), and the worker that owns a key
(rendezvous hash over the workers holding the type: all workers agree, and only a leaver's keys move).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

from autogen_core import AgentId, Subscription, TopicId

from . import _wire
from ._registry import Registry

__all__ = ["Table", "owner"]

log = logging.getLogger("mesh.autogen")


def owner(agent_type: str, key: str, workers: list[str]) -> str | None:
    """The worker that holds ``AgentId(agent_type, key)`` among ``workers`` (which hold the type).

    Rendezvous (highest random weight) hashing: every worker computes the same answer from the same
    table, and when a worker leaves only its keys move.
    """
    if not workers:
        return None
    if len(workers) == 1:
        return workers[0]

    def weight(w: str) -> bytes:
        return hashlib.blake2b(f"{agent_type}\0{key}\0{w}".encode(), digest_size=8).digest()

    return max(workers, key=weight)


def _decode_worker(w: Any) -> dict[str, Any]:
    subs = [_wire.decode_sub(s) for s in w.get("subs", [])]
    return {"endpoint": w["endpoint"], "types": [str(t) for t in w.get("types", [])],
            "subs": subs, "sub_keys": [_wire.sub_key(s) for s in w.get("subs", [])]}


class Table:
    """The other workers (from the directory), this worker's own subscriptions, and routing over both."""

    def __init__(self, worker_id: str, registry: Registry) -> None:
        self.worker_id = worker_id
        self._registry = registry
        self.subs: dict[str, Subscription] = {}  # this worker's own, by id
        self.view: dict[str, Any] = {"epoch": None, "version": -1, "workers": {}}
        self._lock = threading.Lock()
        self._recipients_cache: dict[TopicId, list[AgentId]] = {}

    # ------------------------------------------------------------------ the directory's table
    def apply(self, table: Any) -> None:
        """Take a table from the directory unless it is older than the one we have."""
        if not isinstance(table, dict) or not isinstance(table.get("workers"), dict):
            log.warning("autogen: ignoring a malformed directory table")
            return
        with self._lock:
            cur = self.view
            if table.get("epoch") == cur.get("epoch") and int(table.get("version", 0)) <= int(cur.get("version", -1)):
                return
            workers: dict[str, Any] = {}
            for wid, w in table["workers"].items():
                if wid == self.worker_id:
                    continue
                try:
                    workers[str(wid)] = _decode_worker(w)
                except Exception as exc:
                    log.warning("autogen: ignoring worker %s in the directory table: %s", wid, exc)
            self.view = {"epoch": table.get("epoch"), "version": int(table.get("version", 0)), "workers": workers,
                         "listed_self": self.worker_id in table["workers"]}
            self._recipients_cache = {}

    def changed(self) -> None:
        """This worker's types or subscriptions changed: recompute recipients."""
        self._recipients_cache = {}

    def others(self) -> list[str]:
        with self._lock:
            return list(self.view["workers"])

    def endpoint_of(self, wid: str) -> Any:
        with self._lock:
            w = self.view["workers"].get(wid)
        return None if w is None else w["endpoint"]

    # ------------------------------------------------------------------ subscriptions
    def add_sub(self, subscription: Subscription) -> dict[str, str]:
        encoded = _wire.encode_sub(subscription)
        if any(s == subscription for s in self.subs.values()):
            raise ValueError("Subscription already exists")
        self.subs[subscription.id] = subscription
        self.changed()
        return encoded

    def remove_sub(self, id: str) -> None:
        if id not in self.subs:
            raise ValueError("Subscription does not exist")
        del self.subs[id]
        self.changed()

    def encoded_subs(self) -> list[dict[str, str]]:
        return [_wire.encode_sub(s) for s in self.subs.values()]

    def recipients(self, topic_id: TopicId) -> list[AgentId]:
        cached = self._recipients_cache.get(topic_id)
        if cached is not None:
            return cached
        seen_subs: set[tuple[str, str, str]] = set()
        out: list[AgentId] = []
        seen: set[AgentId] = set()
        with self._lock:
            sources = [(list(self.subs.values()), [_wire.sub_key(s) for s in self.encoded_subs()])]
            sources += [(w["subs"], w["sub_keys"]) for w in self.view["workers"].values()]
        for subs, keys in sources:
            for sub, key in zip(subs, keys, strict=True):
                if key in seen_subs or not sub.is_match(topic_id):
                    continue
                seen_subs.add(key)
                agent_id = sub.map_to_agent(topic_id)
                if agent_id not in seen:
                    seen.add(agent_id)
                    out.append(agent_id)
        self._recipients_cache[topic_id] = out
        return out

    # ------------------------------------------------------------------ routing
    def holders(self, agent_type: str) -> list[str]:
        """Workers (ids, sorted) that registered ``agent_type``, this one included."""
        with self._lock:
            out = [wid for wid, w in self.view["workers"].items() if agent_type in w["types"]]
        if agent_type in self._registry.factories:
            out.append(self.worker_id)
        return sorted(out)

    def owner(self, agent_id: AgentId) -> str | None:
        if agent_id in self._registry.agents:
            return self.worker_id
        return owner(agent_id.type, agent_id.key, self.holders(agent_id.type))
