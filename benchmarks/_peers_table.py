"""The table and JSON of ``peers.py``, from figures already measured (no sockets, no processes: testable alone).

``figures[impl][row]`` is a list of runs, each a dict of the row's keys (``ROWS[row]``), or a string saying why
the implementation has no figure for that row. A cell is the median over runs of each key, keys joined with
" / "; a missing implementation or row is "–". The mesh's cell is in bold where a peer (not raw pyzmq, the
floor) beats it on any of the row's figures.
"""

from __future__ import annotations

import statistics
from typing import Any

# row -> (label, keys, higher is better, format of one figure)
ROWS: dict[str, tuple[str, tuple[str, ...], bool, str]] = {
    "child": ("{agents} agents, child mode: init (s)", ("init_s",), False, "{:.3f}"),
    "running": ("{agents} agents, running server: init (s)", ("init_s",), False, "{:.4f}"),
    "demo": ("{agents} × {sleep:g} s demo distributed (s)", ("seconds",), False, "{:.2f}"),
    "sync": ("sync call median / p99 (µs)", ("median_us", "p99_us"), False, "{:.0f}"),
    "async": ("async calls/s, 1 actor / 4 actors", ("one_per_s", "four_per_s"), True, "{}"),
    "bulk": ("{mb:g} MB argument (ms)", ("ms",), False, "{:.1f}"),
    "future": ("{mb:g} MB A→B through a future (ms)", ("ms",), False, "{:.1f}"),
    "fanout": ("{fanout} actors: create / create + one call each (s)", ("create_s", "create_call_s"), False, "{:.3f}"),
    "pss": ("server PSS (MiB)", ("pss_mib",), False, "{:.1f}"),
}
DASH = "–"


def rate(x: float) -> str:
    return f"{x / 1000:.1f}k" if x >= 1000 else f"{x:.0f}"


def summarise(runs: list[dict[str, Any]] | str | None, keys: tuple[str, ...]) -> dict[str, float] | str | None:
    """The median over runs of each key; a string (why not measured) or None stays as it is."""
    if runs is None or isinstance(runs, str):
        return runs
    good = [r for r in runs if isinstance(r, dict) and all(isinstance(r.get(k), (int, float)) for k in keys)]
    if not good:
        errors = [r.get("error") or r.get("na") for r in runs if isinstance(r, dict)]
        return next((e for e in errors if e), "no run gave a figure")
    return {k: statistics.median([r[k] for r in good]) for k in keys}


def cell(value: dict[str, float] | str | None, row: str) -> str:
    if not isinstance(value, dict):
        return DASH
    _, keys, _, fmt = ROWS[row]
    return " / ".join(rate(value[k]) if row == "async" else fmt.format(value[k]) for k in keys)


def peer_beats_mesh(mesh: dict[str, float] | str | None, peer: dict[str, float] | str | None, row: str) -> bool:
    if not isinstance(mesh, dict) or not isinstance(peer, dict):
        return False
    _, keys, higher, _ = ROWS[row]
    return any((peer[k] > mesh[k]) if higher else (peer[k] < mesh[k]) for k in keys)


def build(figures: dict[str, dict[str, Any]], columns: list[tuple[str, str]], params: dict[str, Any],
          mesh: str = "mesh", floor: str = "raw") -> dict[str, Any]:
    """``columns``: (impl key, header) in order. Returns {"rows": [...], "markdown": str, "mesh_leads": [...], ...}."""
    out_rows, leads, behind = [], [], []
    for n, (row, (label, keys, _, _)) in enumerate(ROWS.items(), 1):
        summary = {impl: summarise(figures.get(impl, {}).get(row), keys) for impl, _ in columns}
        beaten_by = [header for impl, header in columns if impl not in (mesh, floor)
                     and peer_beats_mesh(summary.get(mesh), summary[impl], row)]
        cells = {impl: cell(summary[impl], row) for impl, _ in columns}
        if beaten_by and cells.get(mesh, DASH) != DASH:
            cells[mesh] = f"**{cells[mesh]}**"
        measured_peers = [impl for impl, _ in columns if impl not in (mesh, floor) and isinstance(summary[impl], dict)]
        if isinstance(summary.get(mesh), dict) and measured_peers:
            (behind if beaten_by else leads).append(row)
        out_rows.append({"n": n, "row": row, "label": label.format(**params), "summary": summary, "cells": cells,
                         "beaten_by": beaten_by})
    head = "| # | row | " + " | ".join(h for _, h in columns) + " |"
    sep = "|---|---|" + "---|" * len(columns)
    lines = [head, sep] + [f"| {r['n']} | {r['label']} | " + " | ".join(r["cells"][impl] for impl, _ in columns) + " |"
                           for r in out_rows]
    notes = [f"{h} {r['row']}: {r['summary'][impl]}" for r in out_rows for impl, h in columns
             if isinstance(r["summary"][impl], str)]
    return {"rows": out_rows, "markdown": "\n".join(lines), "mesh_leads": leads, "mesh_behind": behind,
            "not_measured": notes}
