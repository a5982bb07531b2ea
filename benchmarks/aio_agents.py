"""Coroutine agents on one server: N agents each ``await asyncio.sleep(1)`` once; and the round trip
of a no-op ``async def`` method against a no-op sync method, from a threaded client.

1. Sleepers: ``--agents`` (default 10,000) objects whose ``async def nap`` awaits
   ``asyncio.sleep(--nap)`` (default 1 s), on one server in a subprocess (``--capacity``, default
   the server's). Timed: from the first call issued until every result is read. Reported: wall
   time, calls/s, and the server's RSS (``VmRSS`` after, ``VmHWM`` peak) against the same server
   before the agents were created. Without the server's event loop they would run ``capacity``
   at a time: ``agents * nap / capacity`` seconds.
2. Round trip (median, p99 over ``--calls`` per repetition, ``--reps`` alternating repetitions):
   ``obj.sync_noop(x)`` (sync method, on a worker), ``obj.future_noop(x).result()`` (``@async_func
   def``: a future, on a worker), ``obj.async_noop(x).result()`` (``async def``: a future, on the
   loop) and ``obj.waited_noop(x)`` (``@sync_func async def``: the caller
   waits, the loop runs it).

    bin/isolated .venv/bin/python benchmarks/aio_agents.py [--agents 10000] [--nap 1.0]
        [--calls 2000] [--reps 3] [--capacity N] [--json PATH]

Target: the sleepers' wall time < 2 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("MESH_DISCOVERY", "0")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _aio_objects import Noop, Sleepy  # noqa: E402
from _common import median, percentile, table, write_json  # noqa: E402

import mesh  # noqa: E402

TARGET = 2.0


def memory(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MiB."""
    found = {"VmRSS:": 0.0, "VmHWM:": 0.0}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key = line.split(None, 1)[0]
            if key in found:
                found[key] = int(line.split()[1]) / 1024
    return found["VmRSS:"], found["VmHWM:"]


def sleepers(n: int, nap: float, capacity: int | None) -> dict:
    kwargs = {"port": 0, "advertise": False}
    if capacity:
        kwargs["capacity"] = capacity
    srv = mesh.AgentServer(**kwargs).launch(in_subprocess=True)
    try:
        where = {"host": "127.0.0.1", "port": srv.port}
        warm = Sleepy(to_dist=where)
        warm.nap(0).result(timeout=30)  # the loop starts: not in the figure
        base_rss, _ = memory(srv.pid)
        t = time.perf_counter()
        agents = [Sleepy(to_dist=where) for _ in range(n)]
        create_s = time.perf_counter() - t
        t0 = time.perf_counter()
        futs = [a.nap(nap) for a in agents]
        issued = time.perf_counter() - t0
        values = [f.result(timeout=600) for f in futs]
        wall = time.perf_counter() - t0
        assert values == [nap] * n
        rss, hwm = memory(srv.pid)
        cap = srv.capacity
        return {
            "agents": n, "nap_s": nap, "capacity": cap, "create_s": create_s, "issue_s": issued, "wall_s": wall,
            "calls_per_s": n / wall, "rss_base_mib": base_rss, "rss_mib": rss, "rss_peak_mib": hwm,
            "rss_per_agent_kib": (rss - base_rss) * 1024 / n,
            "threaded_estimate_s": n * nap / cap if cap else None, "pass": wall < TARGET,
        }
    finally:
        srv.shutdown()


def round_trips(calls: int, reps: int) -> list[dict]:
    srv = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=True)
    try:
        obj = Noop(to_dist={"host": "127.0.0.1", "port": srv.port})
        kinds = {
            "sync def (worker)": lambda x: obj.sync_noop(x),
            "@async_func def, .result() (worker)": lambda x: obj.future_noop(x).result(),
            "async def, .result() (loop)": lambda x: obj.async_noop(x).result(),
            "@sync_func async def (loop)": lambda x: obj.waited_noop(x),
        }
        for fn in kinds.values():  # warm-up (the loop starts here)
            for i in range(200):
                fn(i)
        per: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
        for _ in range(reps):
            for kind, fn in kinds.items():  # alternate, so load from other processes hits all alike
                times = []
                for i in range(calls):
                    t = time.perf_counter()
                    fn(i)
                    times.append(time.perf_counter() - t)
                per[kind].append((median(times), percentile(times, 99)))
        base = median([m for m, _ in per["sync def (worker)"]])
        rows = []
        for kind, runs in per.items():
            med = median([m for m, _ in runs])
            rows.append({"method": kind, "median (us)": med * 1e6, "p99 (us)": median([p for _, p in runs]) * 1e6,
                         "vs sync": med / base})
        return rows
    finally:
        srv.shutdown()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=10_000, help="coroutine agents (default 10000)")
    ap.add_argument("--nap", type=float, default=1.0, help="seconds each awaits (default 1.0)")
    ap.add_argument("--capacity", type=int, default=None, help="server capacity (default: the server's default)")
    ap.add_argument("--calls", type=int, default=2000, help="round trips per repetition (default 2000)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args()
    s = sleepers(args.agents, args.nap, args.capacity)
    print(table([{
        "agents": s["agents"], "nap (s)": s["nap_s"], "capacity": s["capacity"], "wall (s)": s["wall_s"],
        "issue (s)": s["issue_s"], "calls/s": s["calls_per_s"], "RSS before (MiB)": s["rss_base_mib"],
        "RSS after (MiB)": s["rss_mib"], "RSS peak (MiB)": s["rss_peak_mib"], "create (s)": s["create_s"],
    }], ["agents", "nap (s)", "capacity", "wall (s)", "issue (s)", "calls/s", "RSS before (MiB)", "RSS after (MiB)",
         "RSS peak (MiB)", "create (s)"]))
    print(f"sleepers: {s['wall_s']:.2f} s for {s['agents']} x {s['nap_s']:g} s (target < {TARGET} s): "
          f"{'PASS' if s['pass'] else 'MISS'}; one after another on {s['capacity']} workers: "
          f"{s['threaded_estimate_s']:.0f} s")
    print()
    rows = round_trips(args.calls, args.reps)
    print(table(rows, ["method", "median (us)", "p99 (us)", "vs sync"]))
    mesh.shutdown()
    write_json(args.json, {"benchmark": "aio_agents", "sleepers": s, "round_trip": rows,
                           "target": f"sleepers wall < {TARGET} s", "pass": s["pass"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
