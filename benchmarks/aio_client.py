"""asyncio client: ``await`` round trip and gathered ``.remote()`` calls, against the threaded client.

1. Round trip of a no-op method, one call at a time, median and p99: the threaded sync call
   (``obj.sync_noop(x)``) against ``await obj.async_noop(x)`` (an ``async def``) and
   ``await obj.sync_noop.remote(x)`` from an asyncio client, in the same run (goal: within 1.3x);
   and ``obj.async_noop(x).result()`` from a thread: the same server path as the ``await``, so
   the client's share of the cost shows apart from the server's event-loop hop.
2. Throughput: ``--calls`` (10,000) ``obj.sync_noop.remote(i)`` gathered from one asyncio task
   (``await asyncio.gather(...)``), against the threaded async figure of the same run
   (``futs = [obj.future_noop(i) ...]`` then ``.result()`` each), calls/s (goal: at least equal).

Raw pyzmq (``benchmarks/_raw.py``: a DEALER/ROUTER + msgpack echo server in a subprocess) is
measured in the same run: its round trip beside the round trips, its pipelined echo beside the
throughputs. The load average is printed: the machine may be shared.

Between the throughput phases the script lets the server free the last phase's results
(``--settle``, 0.2 s; 0 measures as before: each gather then runs while the server frees the
results of the phase before it, which the threaded phase never does).

    bin/isolated .venv/bin/python benchmarks/aio_client.py [--calls 10000] [--trips 2000] [--reps 3] [--settle 0.2] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time

import _common  # noqa: F401 - puts the repository on sys.path
from _aio_objects import Noop
from _raw import RawClient, RawServer

import mesh
from _common import median, percentile, table, write_json

GOAL_RT = 1.3


def round_trips(obj, trips: int, raw: RawClient) -> dict[str, list[float]]:
    per: dict[str, list[float]] = {"threaded sync call": [], "await async def": [], "await .remote() (sync def)": [],
                                   "threaded async def .result()": [], "raw pyzmq echo": []}
    for i in range(trips):
        t = time.perf_counter()
        raw.echo(i)
        per["raw pyzmq echo"].append(time.perf_counter() - t)
    for _ in range(trips // 10):  # warm-up
        obj.sync_noop(0)
    for i in range(trips):
        t = time.perf_counter()
        obj.sync_noop(i)
        per["threaded sync call"].append(time.perf_counter() - t)
    for i in range(trips):  # the same server path as `await async def`: the client's share apart
        t = time.perf_counter()
        obj.async_noop(i).result()
        per["threaded async def .result()"].append(time.perf_counter() - t)

    async def aio() -> None:
        for i in range(trips // 10):
            await obj.async_noop(i)
        for i in range(trips):
            t = time.perf_counter()
            await obj.async_noop(i)
            per["await async def"].append(time.perf_counter() - t)
        for i in range(trips):
            t = time.perf_counter()
            await obj.sync_noop.remote(i)
            per["await .remote() (sync def)"].append(time.perf_counter() - t)

    asyncio.run(aio())
    return per


def settle(obj, seconds: float) -> None:
    """Between two throughput phases: the futures of the last one are gone and, within ``seconds``,
    their release reports sent and read by the server; a sync call then checks it answers. Without
    it, the server frees the 10,000 results of one phase while the next one is timed (the threaded
    phase ran on a settled server, each gather behind the previous phase's releases)."""
    if seconds <= 0:
        return
    gc.collect()  # (the last phase's futures: their finalizers queue the reports, sent in batches)
    time.sleep(seconds)
    obj.sync_noop(0)


def throughput(obj, calls: int, raw: RawClient, pause: float = 0.2) -> dict[str, float]:
    t = time.perf_counter()
    assert raw.pipelined(calls)[-1] == calls - 1
    raw_rate = calls / (time.perf_counter() - t)
    settle(obj, pause)
    t = time.perf_counter()
    futs = [obj.future_noop(i) for i in range(calls)]
    assert [f.result(timeout=120) for f in futs][-1] == calls - 1
    threaded = calls / (time.perf_counter() - t)
    del futs

    async def gathered(make) -> float:
        t = time.perf_counter()
        values = await asyncio.gather(*(make(i) for i in range(calls)))
        assert values[-1] == calls - 1
        return calls / (time.perf_counter() - t)

    settle(obj, pause)
    remote = asyncio.run(gathered(obj.sync_noop.remote))
    settle(obj, pause)
    future = asyncio.run(gathered(obj.future_noop))
    settle(obj, pause)
    return {"threaded async (.result())": threaded, "asyncio gather .remote()": remote,
            "asyncio gather @async_func": future, "raw pyzmq pipelined": raw_rate}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--trips", type=int, default=2_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--settle", type=float, default=0.2,
                    help="seconds between throughput phases for the server to free the last one's results (0: none)")
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args()
    load = os.getloadavg()
    srv = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=True)
    raw_server = RawServer()
    raw = RawClient(raw_server.address)
    try:
        obj = Noop(to_dist={"host": "127.0.0.1", "port": srv.port})
        trips: dict[str, list[float]] = {}
        tputs: dict[str, list[float]] = {}
        for _ in range(args.reps):
            for k, v in round_trips(obj, args.trips, raw).items():
                trips.setdefault(k, []).extend(v)
            for k, v in throughput(obj, args.calls, raw, args.settle).items():
                tputs.setdefault(k, []).append(v)
    finally:
        raw.close()
        raw_server.stop()
        srv.shutdown()
        mesh.shutdown()
    load = [round(x, 2) for x in (*load, *os.getloadavg())]
    base = median(trips["threaded sync call"])
    rt_rows = [{"call": k, "median_us": median(v) * 1e6, "p99_us": percentile(v, 99) * 1e6,
                "vs_threaded": median(v) / base} for k, v in trips.items()]
    threaded = median(tputs["threaded async (.result())"])
    tp_rows = [{"calls": k, "calls_per_s": median(v), "vs_threaded": median(v) / threaded} for k, v in tputs.items()]
    print(f"load average (1, 5, 15 min) before: {load[:3]}, after: {load[3:]}; {os.cpu_count()} cores")
    print(f"round trip, no-op, {args.trips} x {args.reps} (goal: await within {GOAL_RT}x of the threaded sync call)")
    print(table(rt_rows, ["call", "median_us", "p99_us", "vs_threaded"]))
    print(f"\nthroughput, {args.calls} calls to one object, median of {args.reps} (goal: asyncio >= threaded)")
    print(table(tp_rows, ["calls", "calls_per_s", "vs_threaded"]))
    rt_pass = rt_rows[1]["vs_threaded"] <= GOAL_RT
    tp_pass = tp_rows[1]["vs_threaded"] >= 1.0
    print(f"\nround trip goal: {'PASS' if rt_pass else 'MISS'}; throughput goal: {'PASS' if tp_pass else 'MISS'}")
    write_json(args.json, {"benchmark": "aio_client", "round_trip": rt_rows, "throughput": tp_rows,
                           "load": load, "calls": args.calls, "trips": args.trips, "reps": args.reps, "settle": args.settle,
                           "round_trip_pass": rt_pass, "throughput_pass": tp_pass})
    return 0


if __name__ == "__main__":
    sys.exit(main())
