"""The peers' table of issue 16 (target 0): raw pyzmq, the mesh, Pyro5, AgentScope 0.1.6 and Ray, side by side.

    bin/isolated .venv/bin/python benchmarks/peers.py [--runs 2] [--quick] [--json benchmarks/out/peers.json]
        [--pyro-python .bench-venvs/pyro/bin/python] [--agentscope-python .bench-venvs/agentscope/bin/python]
        [--ray-python .bench-venvs/ray/bin/python] [--only mesh,pyro] [--rows sync,bulk]

(``benchmarks/peers_setup.sh`` makes those venvs.) A peer whose Python is not given is shown as "–".

The mesh and raw columns come from the mesh's own benchmark scripts, run as subprocesses at small sizes,
their JSON read back (child_start, footprint, webagent_speedup, latency, throughput, bulk_bytes,
placeholder_transfer, fanout); raw's two init rows, which no script measures, from ``_peer_raw.py``. Each
peer's figures come from its own module (``_peer_pyro.py``, ``_peer_agentscope.py``, ``_peer_ray.py``), one
process per row and run, under that peer's Python, each in a network namespace of its own (``bin/isolated``
inside this one). Every cell is the median of ``--runs`` runs; the mesh's cell is bold where a peer beats it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, machine, write_json  # noqa: E402
from _peers_table import ROWS, build  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out", "peers")
PEERS = {"pyro": ("_peer_pyro.py", "Pyro5", "Pyro5"), "agentscope": ("_peer_agentscope.py", "AgentScope 0.1.6", "agentscope"),
         "ray": ("_peer_ray.py", "Ray", "ray")}  # name -> (module, header, import name for the version)


def sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"agents": 5, "sleep": 1.0, "calls": 1000, "warmup": 100, "reps": 3, "mb": 10, "fanout": 200}
    return {"agents": 5, "sleep": 5.0, "calls": 5000, "warmup": 500, "reps": 10, "mb": 10, "fanout": 200}


def _script(name: str, args: list[str], json_path: str, timeout: float = 900) -> dict[str, Any]:
    cmd = [sys.executable, os.path.join(HERE, name), *args, "--json", json_path]
    t = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    print(f"  {name} {' '.join(args)}: rc {proc.returncode} in {time.monotonic() - t:.1f} s", flush=True)
    if proc.returncode != 0 or not os.path.exists(json_path):
        raise RuntimeError(f"{name} failed ({proc.returncode}): {proc.stderr[-1500:]}")
    with open(json_path) as f:
        return json.load(f)


SCRIPT_ROWS = {"child_start.py": {"child"}, "footprint.py": {"running", "pss"}, "webagent_speedup.py": {"demo"},
               "latency.py": {"sync"}, "throughput.py": {"async"}, "bulk_bytes.py": {"bulk"},
               "placeholder_transfer.py": {"future"}, "fanout.py": {"fanout"}}


# (script, its args from the sizes, JSON -> {impl: {row: figures}})
def mesh_scripts(s: dict[str, Any]) -> list[tuple[str, list[str], Any]]:
    mb, reps = str(s["mb"]), str(s["reps"])
    return [
        ("child_start.py", ["--objects", str(s["agents"]), "--runs", "1", "--mode", "pyc"],
         lambda d: {"mesh": {"child": {"init_s": d["median"]["total_s"]}}}),
        ("footprint.py", ["--runs", "1"],
         lambda d: {"mesh": {"running": {"init_s": d["init_s"]}, "pss": {"pss_mib": d["server_mib"]["pss"]}},
                    "raw": {"pss": {"pss_mib": d["raw_server_mib"]["pss"]}}}),
        ("webagent_speedup.py", ["--agents", str(s["agents"]), "--sleep", str(s["sleep"]), "--no-sequential"],
         lambda d: {"mesh": {"demo": {"seconds": d["distributed_s"][0]}}}),
        ("latency.py", ["--calls", str(s["calls"]), "--warmup", str(s["warmup"]), "--reps", "1"],
         lambda d: {impl: {"sync": {k: d["summary"][name][k] for k in ("median_us", "p99_us")}}
                    for impl, name in (("mesh", "mesh"), ("raw", "raw"))}),
        ("throughput.py", ["--calls", str(s["calls"] * 2), "--reps", "1"],
         lambda d: {"mesh": {"async": {"one_per_s": d["calls_per_s"]["mesh, 1 actor"],
                                       "four_per_s": d["calls_per_s"]["mesh, 4 actors"]}},
                    "raw": {"async": {"one_per_s": d["calls_per_s"]["raw pipelined"],
                                      "four_per_s": d["calls_per_s"]["raw pipelined"]}}}),
        ("bulk_bytes.py", ["--mb", mb, "--reps", reps, "--warmup", "2"],
         lambda d: {impl: {"bulk": {"ms": d["median_s"][impl] * 1e3}} for impl in ("mesh", "raw")}),
        ("placeholder_transfer.py", ["--sizes", mb, "--reps", reps, "--warmup", "1"],
         lambda d: {impl: {"future": {"ms": next(iter(d["summary"].values()))[f"{impl}_s"] * 1e3}}
                    for impl in ("mesh", "raw")}),
        ("fanout.py", ["--agents", str(s["fanout"]), "--rounds", "1"],
         lambda d: {"mesh": {"fanout": {"create_s": d["create_s"], "create_call_s": d["create_plus_first_round_s"]}}}),
    ]


def _add(figures: dict, impl: str, row: str, value: dict | str) -> None:
    figures.setdefault(impl, {}).setdefault(row, []).append(value)


def run_mesh(figures: dict, s: dict, run: int, rows: set[str]) -> None:
    for script, args, pick in mesh_scripts(s):
        if not SCRIPT_ROWS[script] & rows:
            continue
        path = os.path.join(OUT, f"{script[:-3]}.{run}.json")
        try:
            picked = pick(_script(script, args, path))
        except Exception as e:  # one script failing leaves its cells "–", the others go on
            print(f"  {script}: {e}", flush=True)
            continue
        for impl, per_row in picked.items():
            for row, value in per_row.items():
                if row in rows:
                    _add(figures, impl, row, value)


def _peer_args(row: str, s: dict) -> list[str]:
    agents = s["fanout"] if row == "fanout" else s["agents"]
    return [row, "--agents", str(agents), "--calls", str(s["calls"] if row != "async" else s["calls"] * 2),
            "--mb", str(s["mb"]), "--reps", str(s["reps"]), "--sleep", str(s["sleep"])]


def run_peer(figures: dict, impl: str, python: str, module: str, row: str, s: dict, own_ns: bool) -> None:
    cmd = [python, os.path.join(HERE, module), *_peer_args(row, s)]
    if own_ns:
        cmd = [os.path.join(ROOT, "bin", "isolated"), *cmd]
    t = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        value = json.loads(lines[-1]) if proc.returncode == 0 and lines else {"error": proc.stderr.strip()[-300:]}
    except subprocess.TimeoutExpired:
        value = {"error": "timed out (600 s)"}
    print(f"  {impl} {row}: {value if 'error' not in value else 'ERROR ' + value['error'][-200:]} "
          f"({time.monotonic() - t:.1f} s)", flush=True)
    _add(figures, impl, row, value)


def version(python: str, name: str) -> str:
    try:
        return subprocess.run([python, "-c", f"import {name}; print({name}.__version__)"], capture_output=True,
                              text=True, timeout=120).stdout.strip()
    except Exception:
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2, help="runs of everything; each cell is their median (default 2)")
    ap.add_argument("--quick", action="store_true", help="small sizes: 1000 calls, 3 reps, the demo's reply 1 s")
    ap.add_argument("--json", default=os.path.join(HERE, "out", "peers.json"))
    for name in PEERS:
        ap.add_argument(f"--{name}-python", help=f"a Python with {PEERS[name][1]} (benchmarks/peers_setup.sh)")
    ap.add_argument("--only", help="implementations to measure, comma-separated (raw,mesh,pyro,agentscope,ray)")
    ap.add_argument("--rows", help=f"rows to measure, comma-separated ({','.join(ROWS)})")
    ap.add_argument("--no-own-namespace", action="store_true", help="run the peers in this namespace, not one each")
    args = ap.parse_args()
    if not os.environ.get("MESH_ISOLATED"):
        print("run it inside bin/isolated (every row opens sockets)", file=sys.stderr)
        return 2
    s = sizes(args.quick)
    rows = set(args.rows.split(",")) if args.rows else set(ROWS)
    only = set(args.only.split(",")) if args.only else {"raw", "mesh", *PEERS}
    pythons = {name: getattr(args, f"{name}_python") for name in PEERS}
    own_ns = not args.no_own_namespace and shutil.which("unshare") is not None
    columns = [("raw", "raw pyzmq"), ("mesh", "mesh")]
    versions = {}
    for name, (_, header, imp) in PEERS.items():
        if pythons[name] and name in only:
            versions[name] = version(pythons[name], imp)
        columns.append((name, f"{header} {versions[name]}" if name == "ray" and name in versions else header))
    os.makedirs(OUT, exist_ok=True)
    figures: dict[str, dict[str, list]] = {}
    loads = [os.getloadavg()]
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    for run in range(args.runs):  # each run measures every implementation, one after the other (A/B/A/B)
        print(f"run {run + 1}/{args.runs} (load {' '.join(f'{x:.2f}' for x in os.getloadavg())})", flush=True)
        if "mesh" in only or "raw" in only:
            run_mesh(figures, s, run, rows)
        if "raw" in only:
            for row in ("child", "running"):
                if row in rows:
                    run_peer(figures, "raw", sys.executable, "_peer_raw.py", row, s, False)
        for name, (module, _, _) in PEERS.items():
            if name in versions:
                for row in ROWS:
                    if row in rows:
                        run_peer(figures, name, pythons[name], module, row, s, own_ns)
        loads.append(os.getloadavg())
    for impl in ("raw", "mesh"):
        if impl not in only:
            figures.pop(impl, None)
    params = {"agents": s["agents"], "sleep": s["sleep"], "mb": s["mb"], "fanout": s["fanout"]}
    result = build(figures, columns, params)
    print()
    print(result["markdown"])
    print(f"\nmesh leads on rows: {', '.join(result['mesh_leads']) or 'none'}; "
          f"a peer beats it on: {', '.join(result['mesh_behind']) or 'none'}")
    for note in result["not_measured"]:
        print(f"  not measured: {note}")
    print(f"load average before/after each run: {loads}")
    write_json(args.json, {"benchmark": "peers", "started": started, "runs": args.runs, "quick": args.quick,
                           "sizes": s, "versions": versions, "pythons": pythons, "own_namespace": own_ns,
                           "load": loads, "figures": figures, "table": result["rows"], "markdown": result["markdown"],
                           "mesh_leads": result["mesh_leads"], "mesh_behind": result["mesh_behind"],
                           "machine_info": machine()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
