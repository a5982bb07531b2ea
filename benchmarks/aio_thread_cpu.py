"""CPU of the calling thread per call: the threaded sync call against ``await obj.sync_noop.remote(i)``.

The wall-clock round trip (``aio_client.py``) mixes both processes and the machine's load; the
calling thread's own CPU (``time.thread_time()``) per call is what the client's code costs,
and the server process's CPU per call (``/proc/<pid>/stat``) is shown beside it. Each round
runs ``--n`` calls of each kind, one after the other; medians of ``--rounds``.
``--profile tottime`` (or ``ncalls``, ``cumtime``) prints a cProfile of the asyncio loop's
thread (thread CPU as its clock) for the last round.

    bin/isolated .venv/bin/python benchmarks/aio_thread_cpu.py [--n 3000] [--rounds 3] [--profile tottime]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import sys
import time

import _common  # noqa: F401 - puts the repository on sys.path
from _aio_objects import Noop

import mesh


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", default="", help="a pstats sort key: profile the loop's thread in the last round")
    args = ap.parse_args()
    load = os.getloadavg()
    srv = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=True)
    obj = Noop(to_dist={"host": "127.0.0.1", "port": srv.port})
    n = args.n

    def server_cpu() -> float:
        with open(f"/proc/{srv.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def threaded() -> tuple[float, float, float]:
        walls = []
        s0, c0 = server_cpu(), time.thread_time()
        for i in range(n):
            t = time.perf_counter()
            obj.sync_noop(i)
            walls.append(time.perf_counter() - t)
        return (time.thread_time() - c0) / n, statistics.median(walls), (server_cpu() - s0) / n

    async def awaited(profile: cProfile.Profile | None) -> tuple[float, float, float]:
        for i in range(n // 10):
            await obj.sync_noop.remote(i)
        walls = []
        if profile is not None:
            profile.enable()
        s0, c0 = server_cpu(), time.thread_time()
        for i in range(n):
            t = time.perf_counter()
            await obj.sync_noop.remote(i)
            walls.append(time.perf_counter() - t)
        cpu = (time.thread_time() - c0) / n
        if profile is not None:
            profile.disable()
        return cpu, statistics.median(walls), (server_cpu() - s0) / n

    try:
        for i in range(n // 10):
            obj.sync_noop(i)
        rows: dict[str, list[tuple[float, float, float]]] = {"threaded sync call": [], "await .remote()": []}
        profile = None
        for r in range(args.rounds):
            rows["threaded sync call"].append(threaded())
            profile = cProfile.Profile(time.thread_time) if args.profile and r == args.rounds - 1 else None
            rows["await .remote()"].append(asyncio.run(awaited(profile)))
    finally:
        srv.shutdown()
        mesh.shutdown()
    after = os.getloadavg()
    print(f"load average (1, 5, 15 min) before: {[round(x, 2) for x in load]}, after: {[round(x, 2) for x in after]}")
    print(f"{n} calls x {args.rounds} rounds, medians (us per call)")
    base = None
    for name, got in rows.items():
        cpu, wall, server = (statistics.median(x[k] for x in got) * 1e6 for k in range(3))
        base = base or (cpu, wall)
        print(f"{name:20} thread CPU {cpu:6.1f}  wall {wall:6.1f}  server process CPU {server:6.1f}"
              f"   vs threaded: CPU {cpu / base[0]:.2f}x, wall {wall / base[1]:.2f}x")
    if profile is not None:
        pstats.Stats(profile).sort_stats(args.profile).print_stats(40)
    return 0


if __name__ == "__main__":
    sys.exit(main())
