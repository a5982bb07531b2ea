"""The AgentScope distributed-mode demo on mesh: N WebAgents whose reply sleeps S seconds.

Prints init time (child mode, and against an already running server),
sequential time and distributed time; writes JSON with --json.

    bin/isolated .venv/bin/python benchmarks/webagent_speedup.py --agents 5 --sleep 5
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import table, write_json  # noqa: E402

import mesh  # noqa: E402
from mesh import AgentBase, Msg  # noqa: E402

SLEEP = float(os.environ.get("WEBAGENT_SLEEP", "5"))


class WebAgent(AgentBase):
    """Pretends to fetch a page and find the answer in it (sleeps)."""

    def __init__(self, name: str, sleep: float = 5.0) -> None:
        super().__init__(name)
        self.sleep = sleep

    def get_answer(self, url: str, query: str) -> str:
        time.sleep(self.sleep)
        return f"Answer from {self.name} for {url}"

    def reply(self, x: Msg | None = None) -> Msg:
        return Msg(name=self.name, role="assistant", content=self.get_answer(x.content["url"], x.content["query"]))


def run(agents: list, urls: list[str], verbose: bool) -> float:
    start = time.perf_counter()
    results = [a.reply(Msg(name="system", role="system", content={"url": u, "query": "example query"})) for a, u in zip(agents, urls, strict=True)]
    for r in results:
        text = r.content
        if verbose:
            print(f"  [{r.name}] {text}")
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=5)
    ap.add_argument("--sleep", type=float, default=5.0)
    ap.add_argument("--capacity", type=int, default=None, help="server capacity (default: max(32, agents))")
    ap.add_argument("--runs", type=int, default=1, help="distributed runs (each is reported)")
    ap.add_argument("--no-sequential", action="store_true", help="skip the sequential run")
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args()
    capacity = args.capacity or max(32, args.agents)
    urls = [f"page_{i + 1}" for i in range(args.agents)]
    verbose = args.agents <= 10
    mesh.init(discovery=False, child_capacity=capacity)

    t = time.perf_counter()
    dist_agents = [WebAgent(f"W{i}", args.sleep).to_dist() for i in range(args.agents)]
    init_child = time.perf_counter() - t

    server = mesh.AgentServer(port=0, capacity=capacity, advertise=False).launch(in_subprocess=True)
    try:
        t = time.perf_counter()
        server_agents = [WebAgent(f"W{i}", args.sleep, to_dist={"host": server.host, "port": server.port}) for i in range(args.agents)]
        init_running = time.perf_counter() - t

        rows = []
        sequential = None
        if not args.no_sequential:
            print(f"sequential ({args.agents} local agents, {args.sleep:g} s each):")
            sequential = run([WebAgent(f"W{i}", args.sleep) for i in range(args.agents)], urls, verbose)
            rows.append({"mode": "sequential (local agents)", "seconds": sequential})
        dist_times = []
        for i in range(args.runs):
            print(f"distributed, child server (run {i + 1}):")
            dist_times.append(run(dist_agents, urls, verbose))
            rows.append({"mode": f"distributed, child server, run {i + 1}", "seconds": dist_times[-1]})
        print("distributed, running server:")
        dist_running = run(server_agents, urls, verbose)
        rows.append({"mode": "distributed, running server", "seconds": dist_running})
        rows.append({"mode": f"init {args.agents} agents, child mode (incl. server start)", "seconds": init_child})
        rows.append({"mode": f"init {args.agents} agents, running server", "seconds": init_running})
        print()
        print(table(rows, ["mode", "seconds"]))
        if sequential:
            print(f"\nspeed-up: {sequential / max(dist_times):.1f}x (sequential {sequential:.2f} s -> distributed {max(dist_times):.2f} s)")
        write_json(args.json, {
            "agents": args.agents, "sleep": args.sleep, "capacity": capacity,
            "init_child_s": init_child, "init_running_server_s": init_running,
            "sequential_s": sequential, "distributed_s": dist_times, "distributed_running_server_s": dist_running,
        })
    finally:
        server.shutdown()
        mesh.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
