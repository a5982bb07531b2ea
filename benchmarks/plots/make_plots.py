"""Plots from the benchmarks' JSON (matplotlib: an optional dependency of the benchmarks only).

    .venv/bin/python benchmarks/plots/make_plots.py [--million OUT/million.json]
        [--webagent OUT/webagent_1.json OUT/webagent_10.json ...] [--out benchmarks/plots]

- ``webagent_speedup.png``: speed-up of the WebAgent demo (sequential time / distributed time,
  or agents x sleep / distributed time when a run skipped the sequential part) against the number
  of agents, from ``webagent_speedup.py --json`` files (e.g. 1, 10, 100, 1000 agents);
- ``million_progress.png``: the million-agent benchmark's progress over time: agents created, then
  replies read in the round (and in the sleeping round), from ``million.py --json``.

Make the WebAgent inputs with, for example:

    for n in 1 10 100 1000; do bin/isolated .venv/bin/python benchmarks/webagent_speedup.py \\
        --agents $n --sleep 1 --no-sequential --json benchmarks/out/webagent_$n.json; done
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: pip install matplotlib (only the plots need it)", file=sys.stderr)
        raise SystemExit(2) from None
    return plt


def webagent(paths: list[str], out: str) -> str:
    points = []
    for path in paths:
        with open(path) as fh:
            d = json.load(fh)
        dist = max(d["distributed_s"])
        sequential = d.get("sequential_s") or d["agents"] * d["sleep"]
        points.append((d["agents"], sequential / dist))
    points.sort()
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    ax.plot(xs, ys, "o-", label="mesh (child server)")
    ax.plot(xs, xs, ":", color="grey", label="ideal (= agents)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("agents")
    ax.set_ylabel("speed-up over sequential")
    ax.set_title("WebAgent demo: speed-up against the number of agents")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    path = os.path.join(out, "webagent_speedup.png")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def million(path_in: str, out: str) -> str:
    with open(path_in) as fh:
        d = json.load(fh)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    create = d["progress"]["create"]
    offset = create[-1][0] if create else 0.0
    ax.plot([t for t, _ in create], [n for _, n in create], label="agents created")
    issue = d["progress"].get("issue", [])
    if issue:
        ax.plot([offset + t for t, _ in issue], [n for _, n in issue], label="round: calls issued")
    rnd = d["progress"]["round"]
    ax.plot([offset + t for t, _ in rnd], [n for _, n in rnd], label="round: replies read")
    sleep = d.get("sleep")
    if sleep and sleep.get("progress"):
        end = offset + (rnd[-1][0] if rnd else 0.0)
        ax.plot([end + t for t, _ in sleep["progress"]], [n for _, n in sleep["progress"]],
                label="sleeping round: replies read (its creation not shown)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("count")
    ax.set_title(f"{d['agents']:,} agents over {d['processes']} servers: progress")
    ax.legend()
    ax.grid(True, alpha=0.3)
    path = os.path.join(out, "million_progress.png")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--million", help="million.py --json output")
    ap.add_argument("--webagent", nargs="*", default=[], help="webagent_speedup.py --json outputs")
    ap.add_argument("--out", default=HERE, help="directory of the PNG files (default benchmarks/plots)")
    args = ap.parse_args()
    if not args.million and not args.webagent:
        ap.error("give --million and/or --webagent")
    os.makedirs(args.out, exist_ok=True)
    if args.webagent:
        print(f"wrote {webagent(args.webagent, args.out)}")
    if args.million:
        print(f"wrote {million(args.million, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
