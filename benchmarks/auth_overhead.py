"""Cost of security: sync latency and async throughput with a shared secret (CURVE) vs without.

    bin/isolated .venv/bin/python benchmarks/auth_overhead.py [--calls 3000] [--reps 3] [--json PATH]

Servers run in subprocesses; the plain and the secured runs alternate, medians over repetitions.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import median, percentile, table, write_json  # noqa: E402

import mesh  # noqa: E402
from mesh import RpcMeta, async_func  # noqa: E402


class Echo(metaclass=RpcMeta):
    def echo(self, s):
        return s

    @async_func
    def aecho(self, s):
        return s


def measure(secret: str | None, calls: int) -> dict:
    mesh.init(discovery=False, secret=secret)
    srv = mesh.AgentServer(port=0, advertise=False, secret=secret).launch()
    try:
        e = Echo(to_dist={"host": srv.host, "port": srv.port})
        for _ in range(300):
            e.echo("hello")
        lat = []
        for _ in range(calls):
            t = time.perf_counter()
            e.echo("hello")
            lat.append(time.perf_counter() - t)
        t = time.perf_counter()
        futs = [e.aecho("hello") for _ in range(calls)]
        for f in futs:
            f.result()
        tput = calls / (time.perf_counter() - t)
        return {"p50": median(lat) * 1e6, "p99": percentile(lat, 99) * 1e6, "tput": tput}
    finally:
        srv.shutdown()
        mesh.shutdown()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for _ in range(args.reps):
        runs["off"].append(measure(None, args.calls))
        runs["on"].append(measure("benchmark-secret", args.calls))
    rows = []
    for mode, rs in runs.items():
        rows.append({"auth": mode, "sync p50 us": median([r["p50"] for r in rs]), "sync p99 us": median([r["p99"] for r in rs]),
                     "async calls/s": median([r["tput"] for r in rs])})
    rows.append({"auth": "on/off", "sync p50 us": rows[1]["sync p50 us"] / rows[0]["sync p50 us"],
                 "sync p99 us": rows[1]["sync p99 us"] / rows[0]["sync p99 us"],
                 "async calls/s": rows[1]["async calls/s"] / rows[0]["async calls/s"]})
    print(table(rows, ["auth", "sync p50 us", "sync p99 us", "async calls/s"]))
    write_json(args.json, {"rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
