"""Run every benchmark, collect their JSON in benchmarks/out/, print one summary table.

Run it inside the isolated network namespace (every benchmark opens sockets):

    bin/isolated .venv/bin/python benchmarks/run_all.py [--repeat 3] [--only latency,fanout] [--out DIR] [--quick]

Each benchmark runs as its own process (``sys.executable``), ``--repeat`` times;
run i of benchmark X writes ``OUT/X.i.json`` (``OUT/X.json`` when --repeat is 1).
The summary (medians over the repeats) goes to ``OUT/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, median, table  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

# name -> (script, extra args)
BENCHMARKS: dict[str, tuple[str, list[str]]] = {
    "latency": ("latency.py", []),
    "throughput": ("throughput.py", []),
    "child_start": ("child_start.py", []),
    "bulk_bytes": ("bulk_bytes.py", []),
    "placeholder_transfer": ("placeholder_transfer.py", []),
    "fanout": ("fanout.py", []),
    "webagent_5x1s": ("webagent_speedup.py", ["--sleep", "1"]),
    "webagent_100x5s": ("webagent_speedup.py", ["--agents", "100", "--sleep", "5", "--no-sequential"]),
    "footprint": ("footprint.py", []),
    "million": ("million.py", ["--agents", "100000"]),
    "many_hosts": ("many_hosts.py", ["--hosts", "5,20,50", "--agents", "20000"]),
}

# --quick: the same figures at small sizes, the whole run under 2 minutes (a smoke run, not a measurement)
QUICK: dict[str, list[str]] = {
    "latency": ["--calls", "1000", "--warmup", "100", "--reps", "1"],
    "throughput": ["--calls", "2000", "--reps", "1"],
    "child_start": ["--runs", "2", "--mode", "pyc"],
    "bulk_bytes": ["--reps", "5", "--warmup", "2"],
    "placeholder_transfer": ["--sizes", "10", "--reps", "3", "--warmup", "1"],
    "fanout": ["--rounds", "2"],
    "webagent_5x1s": ["--sleep", "1", "--no-sequential"],
    "webagent_100x5s": ["--agents", "100", "--sleep", "1", "--no-sequential"],
    "footprint": ["--runs", "1"],
    "million": ["--agents", "5000", "--sleep-agents", "2000"],
    "many_hosts": ["--hosts", "5", "--agents", "2000"],
}


# Key figures of each benchmark's JSON: (figure, value, target text, pass or None)
def _figures(name: str, d: dict[str, Any]) -> list[tuple[str, float, str, bool | None]]:
    if name == "latency":
        s = d["summary"]
        return [
            ("mesh median us", s["mesh"]["median_us"], "", None),
            ("raw median us", s["raw"]["median_us"], "", None),
            ("mesh p99 us", s["mesh"]["p99_us"], "", None),
            ("raw p99 us", s["raw"]["p99_us"], "", None),
            ("ratio median mesh/raw", d["ratio_median"], "<= 1.2", d["ratio_median"] <= 1.2),
        ]
    if name == "throughput":
        r = d["calls_per_s"]
        return [
            ("mesh 1 actor calls/s", r["mesh, 1 actor"], "", None),
            ("mesh 4 actors calls/s", r["mesh, 4 actors"], "", None),
            ("raw pipelined calls/s", r["raw pipelined"], "", None),
            ("ratio 1 actor", d["ratio_1_actor"], ">= 0.35", d["ratio_1_actor"] >= 0.35),
            ("ratio 4 actors", d["ratio_4_actors"], ">= 0.35", d["ratio_4_actors"] >= 0.35),
        ]
    if name == "child_start":
        m = d["median"]
        return [
            (f"5 objects to first answers s ({d.get('judged_mode', 'pyc/discovery-on')})", m["total_s"], "<= 0.2",
             m["total_s"] <= 0.2),
            ("import mesh s", m["import_s"], "", None),
        ]
    if name == "bulk_bytes":
        return [
            ("mesh ms", d["median_s"]["mesh"] * 1e3, "", None),
            ("raw ms", d["median_s"]["raw"] * 1e3, "", None),
            ("ratio", d["ratio"], "<= 1.5", d["ratio"] <= 1.5),
        ]
    if name == "placeholder_transfer":
        out = []
        for size, s in d["summary"].items():
            mb = int(size) // 10**6
            out += [
                (f"{mb} MB mesh ms", s["mesh_s"] * 1e3, "", None),
                (f"{mb} MB raw ms", s["raw_s"] * 1e3, "", None),
                (f"{mb} MB ratio", s["ratio"], "<= 1.5", s["ratio"] <= 1.5),
                (f"{mb} MB caller rx bytes (max)", s["caller_received_bytes_max"], "< 1024",
                 s["caller_received_bytes_max"] < 1024),
            ]
        out.append(("failed transfers", len(d.get("errors", [])), "0", not d.get("errors")))
        return out
    if name == "fanout":
        return [
            ("create 200 s", d["create_s"], "", None),
            ("call 200, issue+read s", d["calls_total_s_median"], "<= 0.1", d["calls_total_s_median"] <= 0.1),
            ("server PSS MiB", d["server_mem_mib"]["after_calls"]["Pss"], "<= 60",
             d["server_mem_mib"]["after_calls"]["Pss"] <= 60),
        ]
    if name == "footprint":
        return [
            ("server PSS MiB", d["server_mib"]["pss"], "<= 17", d["server_mib"]["pss"] <= 17),
            ("raw server PSS MiB", d["raw_server_mib"]["pss"], "", None),
            ("server PSS MiB, advertising", d["advertising_server_mib"]["pss"], "<= 17",
             d["advertising_server_mib"]["pss"] <= 17),
            ("server USS MiB", d["server_mib"]["uss"], "", None),
            ("child server launch s", d["child_start_s"], "< 0.1", d["child_start_s"] < 0.1),
            ("init 5 agents, running server s", d["init_s"], "<= 0.003", d["init_s"] <= 0.003),
        ]
    if name == "million":  # judged extrapolated to 1,000,000 agents (base + per agent x 1e6)
        per = 1e6 / d["agents"]
        srv_1m = (d["server_rss_base"] + d["server_rss_per_agent"] * 1e6) / 2**20
        cli_1m = (d["client_rss_base"] + d["client_per_agent"] * 1e6) / 2**20
        out = [
            ("agents", d["agents"], "", None),
            ("create agents/s", d["create_per_s"], "", None),
            ("round calls/s", d["calls_per_s"], "", None),
            ("wall s (create + round)", d["wall_s"], "", None),
            ("wall s extrapolated to 1M", d["wall_s"] * per, "<= 120", d["wall_s"] * per <= 120),
            ("server RSS MiB", d["server_rss"] / 2**20, "", None),
            ("server RSS MiB extrapolated to 1M", srv_1m, "<= 2048", srv_1m <= 2048),
            ("client RSS MiB", d["client_rss"] / 2**20, "", None),
            ("client RSS MiB extrapolated to 1M", cli_1m, "<= 1024", cli_1m <= 1024),
            ("wrong replies", d["wrong"], "0", d["wrong"] == 0),
        ]
        if "sleep" in d:
            sl = d["sleep"]
            out.append(("sleeping round s", sl["round_s"], f"~{sl['longest_sleep_s']:.2f}",
                        sl["round_s"] <= 1.5 * sl["longest_sleep_s"]))
        return out
    if name == "many_hosts":
        out = []
        for r in d["results"]:
            h = r["hosts"]
            out += [
                (f"{h} hosts: servers() s", r["servers_s"], "<= 1", r["servers_s"] <= 1 and r["servers_listed"] == h),
                (f"{h} hosts: create/s", r["create_per_s"], "flat", None),
                (f"{h} hosts: max deviation from even", r["max_deviation"], "<= 0.1", r["max_deviation"] <= 0.1),
            ]
        return out
    if name.startswith("webagent"):
        out = [("init child s", d["init_child_s"], "", None), ("init running server s", d["init_running_server_s"], "", None)]
        if d.get("sequential_s"):
            out.append(("sequential s", d["sequential_s"], "", None))
        out.append(("distributed s", max(d["distributed_s"]), f"~{d['sleep']:g}", None))
        out.append(("distributed, running server s", d["distributed_running_server_s"], "", None))
        return out
    return []


def run_one(name: str, json_path: str, timeout: float, quick: bool = False) -> tuple[int, float]:
    script, extra = BENCHMARKS[name]
    if quick:
        extra = QUICK.get(name, extra)
    cmd = [sys.executable, os.path.join(HERE, script), *extra, "--json", json_path]
    env = dict(os.environ, MESH_DISCOVERY="0")
    print(f"\n=== {name}: {' '.join(cmd)}", flush=True)
    t = time.perf_counter()
    try:
        rc = subprocess.run(cmd, env=env, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        print(f"!!! {name} timed out after {timeout:g} s", flush=True)
        rc = -1
    return rc, time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="runs of each benchmark (default 1)")
    ap.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    ap.add_argument("--skip", help="comma-separated benchmarks to leave out")
    ap.add_argument("--out", default=os.path.join(HERE, "out"), help="directory for the JSON files (default benchmarks/out)")
    ap.add_argument("--quick", action="store_true", help="small sizes, one run each: the whole table in under 2 minutes")
    ap.add_argument("--timeout", type=float, default=300, help="seconds one benchmark run may take (default 300)")
    args = ap.parse_args()
    if not os.environ.get("MESH_ISOLATED"):
        print("warning: not inside bin/isolated; run: bin/isolated .venv/bin/python benchmarks/run_all.py", file=sys.stderr)
    names = list(BENCHMARKS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
    if args.skip:
        names = [n for n in names if n not in {s.strip() for s in args.skip.split(",")}]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(unknown)}")
    os.makedirs(args.out, exist_ok=True)

    collected: dict[str, list[dict]] = {}
    status: dict[str, list[dict]] = {}
    for name in names:
        for i in range(1, args.repeat + 1):
            path = os.path.join(args.out, f"{name}.json" if args.repeat == 1 else f"{name}.{i}.json")
            if os.path.exists(path):
                os.remove(path)
            rc, seconds = run_one(name, path, args.timeout, args.quick)
            status.setdefault(name, []).append({"run": i, "rc": rc, "seconds": seconds, "json": path})
            if rc == 0 and os.path.exists(path):
                with open(path) as fh:
                    collected.setdefault(name, []).append(json.load(fh))

    rows = []
    summary: dict[str, Any] = {"machine": machine(), "repeat": args.repeat, "runs": status, "figures": {}}
    for name in names:
        runs = collected.get(name, [])
        if not runs:
            rows.append({"benchmark": name, "figure": "FAILED", "median": "", "runs": "", "target": "", "result": "ERROR"})
            continue
        per_run = [_figures(name, d) for d in runs]
        for k, (figure, _, target, _) in enumerate(per_run[0]):
            values = [pr[k][1] for pr in per_run]
            med = median(values)
            oks = [pr[k][3] for pr in per_run]
            result = "" if oks[0] is None else ("PASS" if all(oks) else ("MISS" if not any(oks) else f"{sum(oks)}/{len(oks)} pass"))
            rows.append({"benchmark": name, "figure": figure, "median": med,
                         "runs": ", ".join(f"{v:.4g}" for v in values), "target": target, "result": result})
            summary["figures"].setdefault(name, []).append(
                {"figure": figure, "median": med, "values": values, "target": target, "pass": oks})
    print()
    print(table(rows, ["benchmark", "figure", "median", "runs", "target", "result"]))
    with open(os.path.join(args.out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    print(f"wrote {os.path.join(args.out, 'summary.json')}")
    failed = [n for n, st in status.items() if any(s["rc"] != 0 for s in st)]
    if failed:
        print(f"benchmarks that failed to run: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
