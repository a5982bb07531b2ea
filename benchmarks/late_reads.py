"""Late reads at scale: issue N async calls, then read them all (issue 10, point 17).

    bin/isolated .venv/bin/python benchmarks/late_reads.py --calls 100000
    bin/isolated .venv/bin/python benchmarks/late_reads.py --calls 20000 --max-len 1000

One server in a subprocess, default settings unless told otherwise. Reports how
many reads gave a value and how many ``ResultExpired`` (or another error), the
wall time, and the server's RSS after the gather.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402,F401 - puts the repository on sys.path

sys.path.insert(0, os.path.join(_common.ROOT, "tests"))

import mesh  # noqa: E402
from agents_lib import Producer  # noqa: E402


def status(address: str) -> dict:
    client = mesh.client._client.get_client()
    fut = client.request(address, {"op": "status"}, None, timeout=30)
    return mesh.client._replies.decode_reply(fut.result(60), address)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--max-len", type=int, default=None)
    ap.add_argument("--size", type=int, default=8, help="bytes per result")
    args = ap.parse_args()
    kw = {} if args.max_len is None else {"max_len": args.max_len}
    srv = mesh.AgentServer(port=0, advertise=False, **kw).launch()
    try:
        where = {"host": srv.host, "port": srv.port}
        agents = [Producer(to_dist=where) for _ in range(args.agents)]
        t0 = time.perf_counter()
        futs = [agents[i % len(agents)].make(args.size) for i in range(args.calls)]
        t_issue = time.perf_counter() - t0
        if futs:  # let every call finish before reading from the first: the reads are late
            for f in futs:
                f._mesh_call.exception(600)  # the reply came (value or error); nothing read yet
        ok = expired = other = 0
        for f in futs:
            try:
                f.result(timeout=600)
                ok += 1
            except mesh.ResultExpired:
                expired += 1
            except mesh.MeshError:
                other += 1
        wall = time.perf_counter() - t0
        print(
            f"calls={args.calls} max_len={args.max_len or 'default'} ok={ok} expired={expired} other={other} "
            f"issue={t_issue:.1f}s wall={wall:.1f}s", flush=True,
        )
        st = status(srv.address)
        print(f"server_rss={st['rss'] / 2**20:.0f}MiB results_held={st['results']} bytes={st.get('results_bytes')}")
    finally:
        srv.shutdown()
        mesh.shutdown()


if __name__ == "__main__":
    main()
