"""``zmq-agent-server top ADDRESS...``: a live view of servers (agents, queues, calls/s, errors, p99).

Every ``--interval`` seconds it asks each server for its ``status`` (plain data, never unpickled)
and shows, per server and per agent class and method, what changed since the last look: calls/s,
errors/s and the p99 latency of the calls of that interval (from the server's latency histogram,
so an upper bound within 2x). ``--json`` prints one JSON object per refresh instead, for scripts;
``--iterations N`` stops after N refreshes. The first refresh comes one interval after the start,
so that it already has rates.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from mesh._core import wire
from mesh._core.address import normalize_address
from mesh._errors import MeshError
from mesh.server._stats import quantile

__all__ = ["add_arguments", "fetch", "render", "run", "summarize"]


def add_arguments(tp: Any) -> None:
    """The flags of ``zmq-agent-server top``."""
    tp.add_argument("address", nargs="+", help="tcp://host:port or host:port (one or many)")
    tp.add_argument("--interval", type=_positive, default=1.0, help="seconds between refreshes (default 1)")
    tp.add_argument("--iterations", "-n", type=int, default=0, help="stop after N refreshes (default: until Ctrl-C)")
    tp.add_argument("--once", action="store_const", const=1, dest="iterations", help="one refresh (= --iterations 1)")
    tp.add_argument("--json", action="store_true", help="print one JSON object per refresh")
    tp.add_argument("--timeout", type=_positive, default=2.0, help="seconds to wait for each server (default 2)")
    tp.add_argument("--secret-file", help="file holding the shared secret (else env MESH_SECRET)")


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(text)
    return value


def fetch(address: str, timeout: float) -> dict[str, Any]:
    """One server's status, or ``{"address": ..., "error": why}``."""
    from mesh.client._client import get_client  # the client side: `zmq-agent-server start` never loads it
    from mesh.client._replies import decode_plain, wait

    try:
        addr = normalize_address(address)
        fut = get_client().request(addr, {"op": wire.STATUS}, None, timeout=timeout)
        status = decode_plain(wait(fut, time.monotonic() + timeout, addr), addr)
        if not isinstance(status, dict) or "agents" not in status:
            raise ValueError("not a status reply")
        return {"address": addr, **status}
    except (MeshError, ValueError, TypeError) as exc:
        return {"address": address, "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}


def _diff(now: list[int], before: list[int] | None) -> list[int]:
    if before is None or len(before) != len(now):
        return list(now)
    return [max(0, a - b) for a, b in zip(now, before, strict=True)]


def summarize(cur: dict[str, Any], prev: dict[str, Any] | None, dt: float) -> dict[str, Any]:
    """What ``top`` shows of one server: totals, rates over ``dt`` seconds since ``prev``, p99 of the interval
    (a reply that is not a status reply, e.g. from an older or foreign server, shows as an error)."""
    try:
        return _summarize(cur, prev, dt)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return {"address": str(cur.get("address")), "ok": False, "error": f"malformed status reply ({exc!r:.80})"}


def _summarize(cur: dict[str, Any], prev: dict[str, Any] | None, dt: float) -> dict[str, Any]:
    if "error" in cur:
        return {"address": cur["address"], "ok": False, "error": cur["error"]}
    old = {(r["class"], r["method"]): r for r in (prev or {}).get("calls", ())} if prev and "error" not in prev else {}
    dt = max(dt, 1e-9)
    methods = []
    hist_all: list[int] = []
    for row in cur.get("calls", ()):
        before = old.get((row["class"], row["method"]))
        errors = sum(row["errors"].values())
        d_calls = row["calls"] - (before["calls"] if before else 0)
        d_errors = errors - (sum(before["errors"].values()) if before else 0)
        window = _diff(row["hist"], before["hist"] if before else None)
        hist_all = [a + b for a, b in zip(hist_all, window, strict=True)] if hist_all else list(window)
        methods.append({
            "class": row["class"], "method": row["method"], "calls": row["calls"], "errors": errors,
            "calls_per_s": d_calls / dt, "errors_per_s": d_errors / dt,
            "p99": quantile(window, 0.99), "p99_total": row.get("p99"),
        })
    methods.sort(key=lambda m: (-m["calls_per_s"], -m["calls"]))
    calls = sum(m["calls"] for m in methods)
    errors = sum(m["errors"] for m in methods)
    return {
        "address": cur["address"], "ok": True, "name": cur.get("name"), "uptime": cur.get("uptime"),
        "capacity": cur.get("capacity"), "load": cur.get("load"), "running": _num(cur.get("running", 0)) + _num(cur.get("aio_running", 0)),
        "queued": _num(cur.get("queued", sum(a.get("queue", 0) for a in cur.get("agents", ())))),
        "agents": len(cur.get("agents", ())), "results": cur.get("results"), "rss": _num(cur.get("rss") or 0),
        "bytes_in": cur.get("bytes_in"), "bytes_out": cur.get("bytes_out"), "http": cur.get("http"),
        "calls": calls, "errors": errors, "calls_per_s": sum(m["calls_per_s"] for m in methods),
        "errors_per_s": sum(m["errors_per_s"] for m in methods), "p99": quantile(hist_all, 0.99) if hist_all else None,
        "methods": methods,
        "busiest_agents": sorted(
            ({"class": a["class"], "name": a["name"], "id": a["id"], "queue": a["queue"], "served": a["served"]}
             for a in cur.get("agents", ())), key=lambda a: (-a["queue"], -a["served"]))[:10],
    }


def _num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"not a number: {value!r:.40}")
    return value


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.2f}"


def render(views: list[dict[str, Any]]) -> str:
    """The terminal page of one refresh."""
    lines = [f"zmq-agent-server top  {time.strftime('%H:%M:%S')}  ({len(views)} server{'s' * (len(views) != 1)})", ""]
    lines.append(f"{'SERVER':<28} {'NAME':<24} {'AGENTS':>6} {'LOAD':>7} {'QUEUED':>6} {'CALLS/S':>9} "
                 f"{'ERR/S':>7} {'P99 MS':>8} {'RSS MB':>7}")
    for v in views:
        if not v["ok"]:
            lines.append(f"{v['address']:<28} unreachable: {v['error']}")
            continue
        lines.append(
            f"{v['address'][len('tcp://'):]:<28} {str(v['name'])[:24]:<24} {v['agents']:>6} "
            f"{str(v['load']) + '/' + str(v['capacity']):>7} {v['queued']:>6} {v['calls_per_s']:>9.1f} "
            f"{v['errors_per_s']:>7.1f} {_ms(v['p99']):>8} {(v['rss'] or 0) / 2**20:>7.1f}"
        )
    lines += ["", f"{'SERVER':<22} {'CLASS.METHOD':<34} {'CALLS':>9} {'CALLS/S':>9} {'ERRORS':>7} {'P99 MS':>8}"]
    for v in views:
        for m in v.get("methods", ())[:15]:
            label = f"{m['class']}.{m['method']}"[:34]
            lines.append(f"{str(v['name'])[:22]:<22} {label:<34} {m['calls']:>9} {m['calls_per_s']:>9.1f} "
                         f"{m['errors']:>7} {_ms(m['p99'] if m['calls_per_s'] else m['p99_total']):>8}")
    lines += ["", f"{'SERVER':<22} {'CLASS':<20} {'NAME':<20} {'QUEUE':>6} {'SERVED':>8}"]
    for v in views:
        for a in v.get("busiest_agents", ())[:5]:
            lines.append(f"{str(v['name'])[:22]:<22} {str(a['class'])[:20]:<20} {str(a['name'])[:20]:<20} "
                         f"{a['queue']:>6} {a['served']:>8}")
    return "\n".join(lines)


def run(addresses: list[str], *, interval: float = 1.0, iterations: int = 0, as_json: bool = False,
        timeout: float = 2.0, out: Any = None) -> int:
    """Refresh until ``iterations`` (0: until interrupted). Returns the exit status: 0, or 1 when
    no server answered the last refresh."""
    out = out or sys.stdout
    clear = not as_json and getattr(out, "isatty", lambda: False)()
    prev = {a: fetch(a, timeout) for a in addresses}
    last = time.monotonic()
    n = 0
    views: list[dict[str, Any]] = []
    try:
        while iterations <= 0 or n < iterations:
            time.sleep(max(0.0, interval - (time.monotonic() - last)))
            cur = {a: fetch(a, timeout) for a in addresses}
            now = time.monotonic()
            views = [summarize(cur[a], prev[a], now - last) for a in addresses]
            prev, last, n = cur, now, n + 1
            if as_json:
                print(json.dumps({"time": time.time(), "interval": interval, "servers": views}, default=str), file=out)
            else:
                print(("\x1b[H\x1b[2J" if clear else "") + render(views), file=out)
            out.flush()
    except KeyboardInterrupt:
        pass
    return 0 if any(v["ok"] for v in views) or not views else 1
