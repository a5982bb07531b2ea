"""Server memory: per idle agent, per stored result, and after many application runs.

    bin/isolated .venv/bin/python benchmarks/memory.py [--agents 1000 10000] [--results 10000] [--apps 1000]

Each application run is a fresh client session (new session id, its own agents and calls, then a
clean exit that says bye), as a short-lived application process would be, run in this process to
keep the benchmark short. Memory is the server process's RSS (VmRSS) and PSS.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import table, write_json  # noqa: E402

import mesh  # noqa: E402
from mesh import AgentBase, Msg, RpcMeta, async_func  # noqa: E402


class Idle(AgentBase):
    def reply(self, x=None):
        return Msg(self.name, "ok")


class Maker(metaclass=RpcMeta):
    @async_func
    def make(self, n: int) -> bytes:
        return b"r" * n


def mem(pid: int) -> tuple[float, float]:
    rss = pss = 0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss / 2**20, pss / 2**20


def status(srv) -> dict:
    client = mesh.client._client.get_client()
    return mesh.client._replies.decode_reply(client.request(srv.address, {"op": "status"}, None, timeout=30).result(60), srv.address)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--results", type=int, default=10000)
    ap.add_argument("--result-size", type=int, default=100)
    ap.add_argument("--apps", type=int, default=1000)
    ap.add_argument("--json")
    args = ap.parse_args()
    mesh.init(discovery=False)
    rows = []
    for n in args.agents:
        srv = mesh.AgentServer(port=0, advertise=False).launch()
        try:
            base_rss, base_pss = mem(srv.pid)
            agents = [Idle(f"a{i}", to_dist={"host": srv.host, "port": srv.port}) for i in range(n)]
            rss, pss = mem(srv.pid)
            rows.append({"what": f"{n} idle agents", "server RSS MiB": rss, "server PSS MiB": pss,
                         "per item KiB": (rss - base_rss) * 1024 / n})
            del agents
        finally:
            srv.shutdown()
            mesh.shutdown()
            mesh.init(discovery=False)
    srv = mesh.AgentServer(port=0, advertise=False, max_len=args.results * 2).launch()
    try:
        maker = Maker(to_dist={"host": srv.host, "port": srv.port})
        base_rss, _ = mem(srv.pid)
        kept = [maker.make(args.result_size) for _ in range(args.results)]
        for k in kept:
            k.result()
        import pickle

        for k in kept:
            pickle.dumps(k)  # shared: the server keeps them
        rss, pss = mem(srv.pid)
        rows.append({"what": f"{args.results} stored results of {args.result_size} B", "server RSS MiB": rss,
                     "server PSS MiB": pss, "per item KiB": (rss - base_rss) * 1024 / args.results})
    finally:
        srv.shutdown()
        mesh.shutdown()
    # many application runs against one server
    mesh.init(discovery=False)
    srv = mesh.AgentServer(port=0, advertise=False).launch()
    try:
        checkpoints = {}
        t0 = time.perf_counter()
        for run in range(1, args.apps + 1):
            agents = [Idle(f"app{run}-{i}", to_dist={"host": srv.host, "port": srv.port}) for i in range(5)]
            replies = [a(Msg("u", "hi")) for a in agents]
            assert [r.content for r in replies] == ["ok"] * 5
            maker = Maker(to_dist={"host": srv.host, "port": srv.port})
            assert maker.make(10).result() == b"r" * 10
            del agents, replies, maker
            gc.collect()
            mesh.shutdown()  # the application exits: bye, sockets closed
            mesh.init(discovery=False)
            if run in (10, 100, args.apps // 2, args.apps):
                deadline = time.monotonic() + 10
                while (st := status(srv))["agents"] and time.monotonic() < deadline:
                    time.sleep(0.05)
                checkpoints[run] = (mem(srv.pid)[0], len(st["agents"]), st["results"])
        for run, (rss, n_agents, n_results) in sorted(checkpoints.items()):
            rows.append({"what": f"after {run} application runs", "server RSS MiB": rss, "server PSS MiB": "",
                         "per item KiB": f"{n_agents} agents, {n_results} results left"})
        elapsed = time.perf_counter() - t0
    finally:
        srv.shutdown()
        mesh.shutdown()
    print(table(rows, ["what", "server RSS MiB", "server PSS MiB", "per item KiB"]))
    print(f"\n{args.apps} application runs in {elapsed:.1f} s")
    write_json(args.json, {"rows": rows, "app_runs_s": elapsed})
    return 0


if __name__ == "__main__":
    sys.exit(main())
