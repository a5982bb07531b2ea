"""Throughput: N ``@mesh.async_func`` calls issued, then gathered; mesh vs raw pyzmq pipelined.

Mesh: ``obj.work(i)`` (returns i) N times on one object, or round-robin on four
objects of the same server, then ``.result()`` on each (every result checked).
Raw: N msgpack echo requests sent on a DEALER, then N replies received, to the
raw server of benchmarks/_raw.py. Servers run in subprocesses.

    bin/isolated .venv/bin/python benchmarks/throughput.py [--calls 10000] [--reps 3] [--json PATH]

Target: mesh calls/s >= 0.5x raw pipelined (both the one-actor and four-actor cases).
CPU per call is reported for each process; the client's is also split into its issue phase (the
list of calls) and its read phase (the ``.result()`` loop), every thread of the client included.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("MESH_DISCOVERY", "0")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import cpu_seconds, median, table, write_json  # noqa: E402
from _objects import Echo  # noqa: E402
from _raw import RawClient, RawServer  # noqa: E402

import mesh  # noqa: E402

TARGET = 0.5


PHASES: list[float] = []  # this process's CPU seconds of the last mesh run's issue and read phases


def mesh_run(objs: list, n: int) -> float:
    k = len(objs)
    c0 = time.process_time()  # (every thread of this process, finer than os.times)
    t = time.perf_counter()
    futures = [objs[i % k].work(i) for i in range(n)]
    c1 = time.process_time()
    values = [f.result() for f in futures]
    elapsed = time.perf_counter() - t
    PHASES[:] = [c1 - c0, time.process_time() - c1]
    if values != list(range(n)):
        bad = next(i for i, v in enumerate(values) if v != i)
        raise AssertionError(f"wrong result at {bad}: {values[bad]!r}")
    return elapsed


def raw_run(client: RawClient, n: int) -> float:
    t = time.perf_counter()
    values = client.pipelined(n)
    elapsed = time.perf_counter() - t
    assert values == list(range(n))
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=10000, help="calls per run (default 10000)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args()
    mesh.init(discovery=False)
    n = args.calls

    server = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=True)
    raw_server = RawServer()
    raw = RawClient(raw_server.address)
    times: dict[str, list[float]] = {"mesh, 1 actor": [], "mesh, 4 actors": [], "raw pipelined": []}
    cpu: dict[str, list[tuple[float, float]]] = {name: [] for name in times}  # CPU µs per call: (client, server)
    # the client's CPU µs per call while issuing and while reading (every thread of this process)
    phases: dict[str, list[tuple[float, float]]] = {name: [] for name in times}
    try:
        where = {"host": server.host, "port": server.port}
        one = [Echo(to_dist=where)]
        four = [Echo(to_dist=where) for _ in range(4)]
        # warm-up: connections, code paths
        mesh_run(one, 500)
        mesh_run(four, 500)
        raw_run(raw, 500)
        for rep in range(args.reps):
            for name, fn, pid in (("mesh, 1 actor", lambda: mesh_run(one, n), server.pid),
                                  ("mesh, 4 actors", lambda: mesh_run(four, n), server.pid),
                                  ("raw pipelined", lambda: raw_run(raw, n), raw_server.pid)):
                c0, s0 = cpu_seconds(), cpu_seconds(pid)
                times[name].append(fn())
                cpu[name].append(((cpu_seconds() - c0) / n * 1e6, (cpu_seconds(pid) - s0) / n * 1e6))
                if name != "raw pipelined":
                    phases[name].append((PHASES[0] / n * 1e6, PHASES[1] / n * 1e6))
                split = (f" (issue {phases[name][-1][0]:.1f} us, read {phases[name][-1][1]:.1f} us)"
                         if name != "raw pipelined" else "")
                print(f"rep {rep + 1} {name}: {n / times[name][-1]:,.0f} calls/s, CPU per call: client "
                      f"{cpu[name][-1][0]:.1f} us{split}, server {cpu[name][-1][1]:.1f} us", flush=True)
    finally:
        raw.close()
        raw_server.stop()
        server.shutdown()
        mesh.shutdown()

    rate = {name: n / median(ts) for name, ts in times.items()}
    raw_rate = rate["raw pipelined"]
    cpu_us = {name: {"client": median([c for c, _ in xs]), "server": median([s for _, s in xs])} for name, xs in cpu.items()}
    for name, xs in phases.items():
        if xs:
            cpu_us[name]["client issue"] = median([a for a, _ in xs])
            cpu_us[name]["client read"] = median([b for _, b in xs])
    rows = [{"impl": name, "calls/s": r, "ratio vs raw": r / raw_rate, "seconds": median(times[name]),
             "client CPU us/call": cpu_us[name]["client"], "issue": cpu_us[name].get("client issue", ""),
             "read": cpu_us[name].get("client read", ""), "server CPU us/call": cpu_us[name]["server"]}
            for name, r in rate.items()]
    print()
    print(table(rows, ["impl", "calls/s", "ratio vs raw", "seconds", "client CPU us/call", "issue", "read",
                       "server CPU us/call"]))
    ratios = {name: rate[name] / raw_rate for name in ("mesh, 1 actor", "mesh, 4 actors")}
    ok = all(r >= TARGET for r in ratios.values())
    print(f"\nratios {', '.join(f'{k}: {v:.2f}x' for k, v in ratios.items())} (target >= {TARGET}x): {'PASS' if ok else 'MISS'}")
    write_json(args.json, {
        "benchmark": "throughput", "calls": n, "reps": args.reps, "seconds": times,
        "calls_per_s": rate, "cpu_us_per_call": cpu_us, "ratio_1_actor": ratios["mesh, 1 actor"], "ratio_4_actors": ratios["mesh, 4 actors"],
        "target": f"ratio >= {TARGET}", "pass": ok,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
