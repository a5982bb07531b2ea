"""``zmq-agent-server list``'s output: the servers' table, and under it the objects that report about
themselves (``__mesh_status__``; e.g. an AutoGen host's directory: its agent types and the workers
that hold each, a type on several workers listing every one).

A server's ``ping`` says how many such objects it holds (``reports``); only those servers are asked
for their ``status``. Both replies are plain msgpack, decoded without pickles.
"""

from __future__ import annotations

import time
from typing import Any

from mesh import _views as views
from mesh._core import wire
from mesh._errors import MeshError
from mesh.client._client import get_client
from mesh.client._replies import decode_plain, wait

__all__ = ["fetch_reports", "json_rows", "text_lines"]


def fetch_reports(found: list[Any], timeout: float) -> dict[str, Any]:
    """address -> the reporting objects of that server (``[{class, registered_name, id, detail}]``),
    or a string saying why they could not be read; only servers whose ping counted some."""
    asked = [s.address for s in found if getattr(s, "reports", 0)]
    if not asked:
        return {}
    client = get_client()
    futs: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for address in asked:
        try:
            futs[address] = client.request(address, {"op": wire.STATUS}, None, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - one server's failure is reported, the others still listed
            out[address] = f"{type(exc).__name__}: {exc}"
    deadline = time.monotonic() + timeout
    for address, fut in futs.items():
        try:
            out[address] = _rows(decode_plain(wait(fut, deadline, address), address))
        except (MeshError, KeyError, TypeError, ValueError) as exc:
            out[address] = f"{type(exc).__name__}: {exc}"
    return out


def _rows(info: Any) -> list[dict[str, Any]]:
    if not isinstance(info, dict) or not isinstance(info.get("agents"), list):
        raise ValueError("malformed status reply")
    return [{"class": a.get("class"), "registered_name": a.get("registered_name"), "id": a.get("id"),
             "detail": a["detail"]} for a in info["agents"] if isinstance(a, dict) and "detail" in a]


def json_rows(found: list[Any], reports: dict[str, Any]) -> list[dict[str, Any]]:
    """``list --json``: one map per server; ``details`` (the reporting objects) where it has some."""
    rows = []
    for s in found:
        row = s.to_dict()
        got = reports.get(s.address)
        if isinstance(got, list):
            row["details"] = got
        elif got is not None:
            row["details_error"] = got
        rows.append(row)
    return rows


def text_lines(found: list[Any], reports: dict[str, Any]) -> list[str]:
    """The table, then each server's reporting objects with their reports, indented."""
    if not found:
        return ["no servers found"]
    lines = [f"{'NAME':<40} {'ADDRESS':<28} {'CAPACITY':>8} {'LOAD':>5} {'AGENTS':>6} {'AUTH':>5}"]
    for s in found:
        lines.append(f"{s.name:<40} {s.address:<28} {s.capacity:>8} {s.load:>5} {s.agents:>6} "
                     f"{'yes' if s.auth else 'no':>5}")
    for s in found:
        got = reports.get(s.address)
        if got is None:
            continue
        lines.append(f"{s.name} {s.address}:")
        if not isinstance(got, list):
            lines.append(f"  (its report could not be read: {got})")
            continue
        for row in got:
            lines.append(f"  {row.get('class')} {row.get('registered_name') or row.get('id')}")
            lines += views._detail_lines(row.get("detail"))
    return lines
