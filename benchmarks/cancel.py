"""Cancellation and deadlines: cancel latency three hops down, and deadline accuracy.

(a) Cancel latency: ``a.relay2(b, c)`` on three agent servers (subprocesses): A awaits B, which
    awaits a coroutine on C. From ``fut.cancel()`` on the caller to the ``finally`` of C's
    coroutine (``time.monotonic()`` is system-wide on Linux, so both processes' clocks agree).
    Raw pyzmq beside it: three DEALER/ROUTER echo round trips, one per hop (what carrying a
    message three hops and back costs without the mesh).
(b) Deadline accuracy: N calls under one ``mesh.deadline(D)`` to coroutine methods that sleep
    5 s, read by N concurrent awaits (one asyncio task each) and, in a second round, by one
    thread reading the futures in turn: when each reader gets ``DeadlineExceeded``, relative to
    the deadline; and when the servers ran the methods' ``finally`` (the server-side cancel).
    Baseline: ``threading.Event().wait(D)`` overshoot on this machine, in the same run.

    bin/isolated .venv/bin/python benchmarks/cancel.py [--reps 30] [--calls 100] [--json PATH]

Goals: (a) median < 10 ms; (b) every reader within a few ms after the deadline, never before.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time

os.environ.setdefault("MESH_DISCOVERY", "0")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cancel_objects import Hop  # noqa: E402
from _common import median, percentile, table, write_json  # noqa: E402
from _raw import RawClient, RawServer  # noqa: E402

import mesh  # noqa: E402

GOAL_MS = 10.0


def _wait(cond, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise RuntimeError("timed out")
        time.sleep(0.001)


def cancel_latency(servers: list, reps: int) -> list[float]:
    a, b, c = (Hop(to_dist={"host": s.host, "port": s.port}) for s in servers)
    out = []
    for _ in range(reps):
        c.reset()
        fut = a.relay2(b, c, 60)
        _wait(lambda: c.started == 1)
        t0 = time.monotonic()
        assert fut.cancel() is True
        _wait(lambda: len(c.ended) == 1)
        out.append((c.ended[0] - t0) * 1e3)
        try:
            fut.result()
        except mesh.Cancelled:
            pass
    return out


def raw_three_hops(reps: int) -> list[float]:
    raws = [RawServer() for _ in range(3)]
    try:
        clients = [RawClient(r.address) for r in raws]
        for cl in clients:
            cl.echo("warm")
        out = []
        for _ in range(reps):
            t0 = time.perf_counter()
            for cl in clients:
                cl.echo("cancel")
            out.append((time.perf_counter() - t0) * 1e3)
        return out
    finally:
        for r in raws:
            r.stop()


def deadline_round(servers: list, calls: int, seconds: float, concurrent: bool) -> tuple[list[float], list[float]]:
    # one hop per call: a second call on a hop would queue behind the first and, never started by the
    # deadline, never run (so its finally, waited for below, only ran when it won a race)
    hops = [Hop(to_dist={"host": s.host, "port": s.port}) for s in servers for _ in range(max(1, -(-calls // len(servers))))]
    with mesh.deadline(seconds) as d:
        futs = [hops[i % len(hops)].sleep(5) for i in range(calls)]
    at = d.at
    got: list[float] = []

    def read(fut) -> None:
        try:
            fut.result()
        except mesh.DeadlineExceeded:
            got.append((time.monotonic() - at) * 1e3)

    if concurrent:
        async def one(fut) -> None:
            try:
                await fut
            except mesh.DeadlineExceeded:
                got.append((time.monotonic() - at) * 1e3)

        async def main() -> None:
            await asyncio.gather(*(one(f) for f in futs))

        asyncio.run(main())
    else:
        for f in futs:
            read(f)
    _wait(lambda: sum(len(h.ended) for h in hops) >= calls, 10)  # the servers' cancels (finally ran)
    ended = [(t - at) * 1e3 for h in hops for t in h.ended]
    return got, ended


def event_overshoot(seconds: float, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.monotonic()
        threading.Event().wait(seconds)
        out.append((time.monotonic() - t0 - seconds) * 1e3)
    return out


def stats(name: str, xs: list[float]) -> dict:
    return {
        "what": name, "n": len(xs), "min_ms": min(xs), "median_ms": median(xs), "p99_ms": percentile(xs, 99),
        "max_ms": max(xs), "spread_ms": max(xs) - min(xs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=30, help="cancels timed (default 30)")
    ap.add_argument("--calls", type=int, default=100, help="calls under one deadline (default 100)")
    ap.add_argument("--deadline", type=float, default=0.5, help="seconds (default 0.5)")
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args()
    servers = [mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=True) for _ in range(3)]
    try:
        lat = cancel_latency(servers, args.reps)
        raw = raw_three_hops(args.reps)
        conc_read, conc_end = deadline_round(servers, args.calls, args.deadline, concurrent=True)
        seq_read, seq_end = deadline_round(servers, args.calls, args.deadline, concurrent=False)
        floor = event_overshoot(args.deadline, 5)
    finally:
        for s in servers:
            s.shutdown()
        mesh.shutdown()
    rows_a = [stats("mesh: cancel() -> finally 3 hops down", lat), stats("raw pyzmq: 3 echo round trips", raw)]
    cols = ["what", "n", "min_ms", "median_ms", "p99_ms", "max_ms"]
    print("(a) cancel latency, A -> B -> C on three servers")
    print(table(rows_a, cols))
    print()
    rows_b = [
        stats(f"readers (asyncio, {args.calls} awaits): DeadlineExceeded after the deadline", conc_read),
        stats("servers: finally of the cancelled method (asyncio round)", conc_end),
        stats("readers (one thread, in turn): DeadlineExceeded after the deadline", seq_read),
        stats("servers: finally of the cancelled method (thread round)", seq_end),
        stats(f"baseline: Event().wait({args.deadline:g}) overshoot", floor),
    ]
    print(f"(b) deadline accuracy: {args.calls} calls, deadline {args.deadline:g} s, methods of 5 s")
    print(table(rows_b, ["what", "n", "min_ms", "median_ms", "max_ms", "spread_ms"]))
    med = median(lat)
    print()
    print(f"cancel latency median {med:.2f} ms (goal < {GOAL_MS:g} ms): {'OK' if med < GOAL_MS else 'MISS'}")
    early = [x for x in conc_read + seq_read if x < 0]
    print(f"readers before the deadline: {len(early)}; all {args.calls * 2} readers got DeadlineExceeded: "
          f"{len(conc_read) + len(seq_read) == args.calls * 2}")
    write_json(args.json, {
        "benchmark": "cancel", "cancel_latency": rows_a, "deadline_accuracy": rows_b,
        "goal_ms": GOAL_MS, "met": med < GOAL_MS, "deadline_s": args.deadline, "calls": args.calls,
    })


if __name__ == "__main__":
    main()
