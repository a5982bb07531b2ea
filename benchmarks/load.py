"""Load: many agents over several servers, many calls with distinct arguments, every result checked.

    bin/isolated .venv/bin/python benchmarks/load.py --agents 1000 --servers 4 --calls 100000 [--kill-one]

Prints calls/s, latency percentiles of sync calls, lost/duplicated results, and the servers' max RSS;
writes JSON with --json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import percentile, table, write_json  # noqa: E402

import mesh  # noqa: E402
from mesh import RpcMeta, async_func  # noqa: E402


class Counter(metaclass=RpcMeta):
    def __init__(self) -> None:
        self.total = 0
        self.calls = 0

    @async_func
    def add(self, n: int) -> int:
        self.total += n
        self.calls += 1
        return n * 2

    def state(self) -> tuple[int, int]:
        return self.total, self.calls


def rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--servers", type=int, default=4)
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--window", type=int, default=5000, help="async calls in flight at most")
    ap.add_argument("--kill-one", action="store_true", help="SIGKILL one server half way")
    ap.add_argument("--json")
    args = ap.parse_args()
    mesh.init(discovery=False)
    servers = [mesh.AgentServer(port=0, capacity=16, advertise=False).launch() for _ in range(args.servers)]
    try:
        t0 = time.perf_counter()
        agents = [Counter(to_dist={"host": servers[i % len(servers)].host, "port": servers[i % len(servers)].port}) for i in range(args.agents)]
        create_s = time.perf_counter() - t0
        victim = servers[-1] if args.kill_one else None
        ok = failed = wrong = 0
        expected_total = [0] * len(agents)
        inflight: list = []
        t0 = time.perf_counter()
        for i in range(args.calls):
            if victim is not None and i == args.calls // 2:
                victim._proc.kill()
            k = i % len(agents)
            try:
                inflight.append((i, k, agents[k].add(i)))
            except mesh.ServerUnavailable:
                failed += 1
                continue
            if len(inflight) >= args.window:
                ok, failed, wrong = drain(inflight, expected_total, ok, failed, wrong)
        ok, failed, wrong = drain(inflight, expected_total, ok, failed, wrong)
        elapsed = time.perf_counter() - t0
        # sync latency sample
        lat = []
        live = [a for a in agents if victim is None or a._mesh_address != victim.address]
        for a in live[:2000]:
            t = time.perf_counter()
            a.state()
            lat.append(time.perf_counter() - t)
        # totals: no call lost or applied twice on live servers
        mismatched = 0
        for k, a in enumerate(agents):
            if victim is not None and a._mesh_address == victim.address:
                continue
            if a.state()[0] != expected_total[k]:
                mismatched += 1
        rows = [{
            "agents": args.agents, "servers": args.servers, "calls": args.calls,
            "ok": ok, "failed (killed server)": failed, "wrong": wrong, "agents with wrong totals": mismatched,
            "calls/s": args.calls / elapsed, "create agents s": create_s,
            "sync p50 ms": percentile(lat, 50) * 1000, "sync p99 ms": percentile(lat, 99) * 1000,
            "max server RSS MiB": max(rss(s.pid) for s in servers if s is not victim) / 2**20,
        }]
        print(table(rows, list(rows[0])))
        write_json(args.json, {"results": rows})
        return 0 if wrong == 0 and mismatched == 0 else 1
    finally:
        for s in servers:
            s.shutdown()
        mesh.shutdown()


def drain(inflight: list, expected_total: list, ok: int, failed: int, wrong: int) -> tuple[int, int, int]:
    for i, k, fut in inflight:
        try:
            if fut.result(timeout=120) == i * 2:
                ok += 1
                expected_total[k] += i
            else:
                wrong += 1
        except mesh.ServerUnavailable:
            failed += 1
    inflight.clear()
    return ok, failed, wrong


if __name__ == "__main__":
    sys.exit(main())
