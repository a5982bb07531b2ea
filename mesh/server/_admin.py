"""Admin payloads: ``ping`` (what discovery and placement read) and ``status`` (``zmq-agent-server status``).

Both are plain data (decoded by clients without pickles).
"""

from __future__ import annotations

import os
import time
from typing import Any

import transport
from mesh._core import wire
from mesh.server._mailbox import Actor

__all__ = ["durable_cell", "info", "restorable_lines", "rss", "status"]


def info(
    *, name: str, capacity: int, load: int, agents: int, started: float, max_message_size: int, reports: int = 0,
) -> dict[str, Any]:
    """The ``ping`` reply; ``reports``: objects with their own report (``__mesh_status__``), only when some."""
    return {
        "name": name,
        "capacity": capacity,
        "load": load,
        "agents": agents,
        "py": wire.PY_VERSION,
        "proto": transport.PROTOCOL_MAJOR,
        "uptime": time.time() - started,
        "max_message_size": max_message_size,
        "pid": os.getpid(),
        **({"reports": reports} if reports else {}),
    }


def status(
    ping: dict[str, Any], actors: list[Actor], pool: Any, aio_running: int = 0, running: int = 0,
    **more: Any,
) -> dict[str, Any]:
    """The ``status`` reply: ``ping``'s fields, one row per agent, the result store's size, the RSS,
    ``running`` (calls executing on worker threads now, blocked ones included) and ``aio_running``
    (coroutine calls running on the server's event loop now); ``more`` adds plain fields (``calls``:
    the per class and method counters, ``bytes_in`` / ``bytes_out``, ``http``)."""
    agents = [{
        "id": a.id,
        "registered_name": a.name,
        "detached": a.session is None,
        "class": a.cls_name,
        "name": _plain_name(getattr(a.obj, "name", None) if a.obj is not None else None),
        "agent_id": _plain_name(getattr(a.obj, "agent_id", None) if a.obj is not None else None),
        "queue": len(a.queue),
        "served": a.served,
        **_detail(a.obj),
        **({"durable": a.durable.row()} if a.durable is not None else {}),
    } for a in actors]
    return {
        **ping, "agents": agents, "results": len(pool), "results_bytes": getattr(pool, "nbytes", None), "rss": rss(),
        "running": running, "aio_running": aio_running, "queued": sum(a["queue"] for a in agents), **more,
    }


def _detail(obj: Any) -> dict[str, Any]:
    """``{"detail": obj.__mesh_status__()}`` as bounded plain data, for an object whose class has that
    method (e.g. ``mesh.autogen``'s directory: its agent types and the workers that hold each);
    ``{}`` for every other object, so their rows are unchanged."""
    fn = getattr(type(obj), "__mesh_status__", None) if obj is not None else None
    if fn is None:
        return {}
    try:
        return {"detail": _plain(fn(obj), 4)}
    except Exception as exc:  # an object's own report never breaks the server's status
        return {"detail": f"__mesh_status__ failed: {type(exc).__name__}: {exc}"[:200]}


def _plain(value: Any, depth: int) -> Any:
    """``value`` as msgpack-plain data: at most 200 items per level, ``depth`` levels, 200-char strings."""
    if value is None or type(value) in (bool, float) or (type(value) is int and -(2**63) <= value < 2**64):
        return value
    if isinstance(value, str):
        return value[:200]
    if depth > 0 and isinstance(value, dict):
        return {str(k)[:200]: _plain(v, depth - 1) for k, v in list(value.items())[:200]}
    if depth > 0 and isinstance(value, (list, tuple)):
        return [_plain(v, depth - 1) for v in list(value)[:200]]
    return repr(value)[:200]


def _plain_name(name: Any) -> Any:
    """An agent's ``name`` as plain data: admin replies are decoded without pickles."""
    return name if name is None or type(name) in (str, int, float, bool) else repr(name)[:200]


def rss() -> int:
    """This process's resident memory in bytes (0 where ``/proc`` is missing)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def durable_cell(d: Any) -> str:
    """``checkpoint v12, restarts 1/3`` for a durable agent's row of ``status``; ``-`` otherwise."""
    if not isinstance(d, dict):
        return "-"
    what = {True: "checkpoint", "best-effort": "checkpoint (best-effort)"}.get(d.get("checkpoint"), "restartable")
    version = f" v{d.get('version')}" if d.get("checkpoint") else ""
    return f"{what}{version}, restarts {d.get('gen', 0)}/{d.get('max_restarts', 0)}"


def restorable_lines(info: dict) -> list[str]:
    """The checkpoints a server's state store holds (what it could restore), under its agents."""
    rows = info.get("restorable")
    if not info.get("state_store") and not rows:
        return []
    lines = [f"state store {info.get('state_store')}: {len(rows or [])} durable object(s) it could restore"]
    for r in rows or []:
        state = f"error: {r['error']}" if r.get("error") else f"checkpoint v{r.get('version')}, last at {r.get('address')}"
        lines.append(f"  {str(r.get('class', '?')):<20} {r.get('id')}  {state}")
    return lines
