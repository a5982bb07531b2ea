"""The host's directory: where workers meet. It is never on the data path.

It lists each worker's endpoint (a mesh proxy), its agent types and its subscriptions. Every change
is pushed to the other workers (each push waits a bounded time, so a frozen worker cannot stall the
directory), and workers also poll it, so a missed push heals.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import mesh

__all__ = ["Directory"]

log = logging.getLogger("mesh.autogen")

PUSH_WAIT = 2.0  # seconds the directory waits for the other workers' acknowledgements of a change


class Directory(metaclass=mesh.RpcMeta):
    def __init__(self, address: str = "", heartbeat_timeout: float = 3.0) -> None:
        self._address = address
        self._hb = float(heartbeat_timeout)
        self._epoch = uuid.uuid4().hex
        self._version = 0
        self._workers: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- reading
    def info(self) -> dict[str, Any]:
        return {"address": self._address, "epoch": self._epoch, "version": self._version, "workers": len(self._workers)}

    def table(self) -> dict[str, Any]:
        with self._lock:
            return self._table()

    def status(self) -> list[dict[str, Any]]:
        """One row per worker: id, address, agent types, number of subscriptions (for operators)."""
        with self._lock:
            return [
                {"worker": wid, "address": w.get("address"), "types": list(w["types"]), "subscriptions": len(w["subs"])}
                for wid, w in self._workers.items()
            ]

    def types(self) -> dict[str, list[str]]:
        """Agent type -> the workers that registered it (``"<worker id> <address>"``), for operators.

        A type registered on several workers lists every one of them (its keys are spread over them)."""
        with self._lock:
            held: dict[str, list[str]] = {}
            for wid, w in self._workers.items():
                for agent_type in w["types"]:
                    held.setdefault(agent_type, []).append(f"{wid} {w.get('address') or '?'}")
            return {t: sorted(ws) for t, ws in sorted(held.items())}

    def __mesh_status__(self) -> dict[str, Any]:
        """What ``zmq-agent-server status`` shows under the directory's row (see ``mesh.server._admin``)."""
        with self._lock:
            workers = {wid: f"{w.get('address') or '?'}  {len(w['types'])} type(s), {len(w['subs'])} subscription(s)"
                       for wid, w in self._workers.items()}
        return {"workers": workers, "agent types": self.types()}

    def _table(self) -> dict[str, Any]:
        return {
            "epoch": self._epoch,
            "version": self._version,
            "workers": {
                wid: {"endpoint": w["endpoint"], "address": w.get("address"), "types": list(w["types"]),
                      "subs": [dict(s) for s in w["subs"]]}
                for wid, w in self._workers.items()
            },
        }

    # ---------------------------------------------------------------- changes
    def join(self, wid: str, endpoint: Any, info: dict[str, Any]) -> dict[str, Any]:
        """Add (or replace) a worker with its types and subscriptions; returns the table."""
        wid = _check_id(wid)
        types = [str(t) for t in info.get("types", [])]
        subs = [_check_sub(s) for s in info.get("subs", [])]
        with self._lock:
            self._workers[wid] = {"endpoint": endpoint, "address": str(info.get("address", "")), "types": types,
                                  "subs": subs}
        return self._changed(wid)

    def leave(self, wid: str) -> dict[str, Any]:
        with self._lock:
            self._workers.pop(str(wid), None)
        return self._changed(None)

    def register_type(self, wid: str, agent_type: str) -> dict[str, Any]:
        with self._lock:
            w = self._worker(wid)
            if str(agent_type) not in w["types"]:
                w["types"].append(str(agent_type))
        return self._changed(wid)

    def add_subscription(self, wid: str, sub: dict[str, Any]) -> dict[str, Any]:
        sub = _check_sub(sub)
        with self._lock:
            w = self._worker(wid)
            w["subs"] = [s for s in w["subs"] if s["id"] != sub["id"]] + [sub]
        return self._changed(wid)

    def remove_subscription(self, wid: str, sub_id: str) -> dict[str, Any]:
        with self._lock:
            w = self._worker(wid)
            w["subs"] = [s for s in w["subs"] if s["id"] != str(sub_id)]
        return self._changed(wid)

    def sweep(self) -> list[str]:
        """Ping every worker; drop those that do not answer within the heartbeat timeout."""
        with self._lock:
            endpoints = {wid: w["endpoint"] for wid, w in self._workers.items()}
        pings = {}
        for wid, ep in endpoints.items():
            try:
                pings[wid] = ep.ping()
            except Exception:
                pings[wid] = None
        deadline = time.monotonic() + self._hb
        dead = []
        for wid, fut in pings.items():
            try:
                if fut is None:
                    raise mesh.ServerUnavailable("ping not sent")
                fut.result(timeout=max(0.05, deadline - time.monotonic()))
            except Exception as exc:
                log.warning("autogen directory: worker %s does not answer (%s); dropping it", wid, exc)
                dead.append(wid)
        if dead:
            with self._lock:
                for wid in dead:
                    self._workers.pop(wid, None)
            self._changed(None)
        return dead

    # ---------------------------------------------------------------- helpers
    def _worker(self, wid: str) -> dict[str, Any]:
        w = self._workers.get(str(wid))
        if w is None:
            raise mesh.AgentNotFound(f"worker {wid} has not joined this directory (or was dropped): join again")
        return w

    def _changed(self, origin: str | None) -> dict[str, Any]:
        with self._lock:
            self._version += 1
            table = self._table()
            targets = [(wid, w["endpoint"]) for wid, w in self._workers.items() if wid != origin]
        futs = []
        for wid, ep in targets:
            try:
                futs.append((wid, ep.update(table)))
            except Exception as exc:
                log.debug("autogen directory: push to %s failed: %s", wid, exc)
        deadline = time.monotonic() + PUSH_WAIT
        for wid, fut in futs:
            try:
                fut.result(timeout=max(0.05, deadline - time.monotonic()))
            except Exception as exc:  # slow or gone: it will poll, or the sweep drops it
                log.debug("autogen directory: push to %s not acknowledged: %s", wid, exc)
        return table


def _check_id(wid: Any) -> str:
    if not isinstance(wid, str) or not wid or len(wid) > 200:
        raise ValueError("a worker id is a non-empty string")
    return wid


def _check_sub(sub: Any) -> dict[str, str]:
    if not isinstance(sub, dict) or sub.get("kind") not in ("type", "prefix"):
        raise ValueError(f"malformed subscription {sub!r}")
    return {k: str(sub[k]) for k in ("kind", "id", "topic", "agent_type")}
