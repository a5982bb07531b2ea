"""A million agents on one machine: create N small agents with plain ``to_dist()`` over the servers of
``zmq-agent-server start --processes 4`` (found by discovery), then one round calling every agent
once and reading every reply, all from one plain thread; then the same with coroutine agents whose
reply sleeps a random 0.5-2 s (a stand-in for an LLM call).

    bin/isolated .venv/bin/python benchmarks/million.py [--agents 1000000] [--processes 4]
        [--capacity 32] [--skip-sleep] [--sleep-agents N] [--json PATH]

Reported: creation time and rate, round time and calls/s, total wall (creation + round; goal
<= 120 s at 1,000,000), the servers' total RSS (goal <= 2 GiB) and the client's (goal <= 1 GiB),
peak (VmHWM) and at the end; for the sleeping round, its wall against the longest sleep. The
progress over time (agents created, replies read) goes to the JSON for benchmarks/plots/.

The servers get their own mDNS service type and local registry, so only they are discovered.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import ROOT, table, write_json  # noqa: E402

RUN = uuid.uuid4().hex[:8]
os.environ["MESH_SERVICE_TYPE"] = f"_mil{RUN}._tcp.local."
os.environ["MESH_REGISTRY_DIR"] = os.path.join(tempfile.gettempdir(), f"million-{RUN}")
os.environ.pop("MESH_PEERS", None)
os.environ["MESH_DISCOVERY"] = "1"

import mesh  # noqa: E402
from _million_agents import Napper, Small  # noqa: E402

GOAL_WALL, GOAL_SERVER, GOAL_CLIENT = 120.0, 2 * 2**30, 2**30


def mem(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in bytes (0, 0 if gone)."""
    out = {"VmRSS:": 0, "VmHWM:": 0}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key = line.split(None, 1)[0]
                if key in out:
                    out[key] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out["VmRSS:"], out["VmHWM:"]


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except OSError:
            pass
    return found


def cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by ``pids`` together."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def servers_mem(root: int) -> tuple[int, int]:
    pids = [p for p in descendants(root)]
    rss = [mem(p) for p in pids]
    return sum(r for r, _ in rss), sum(h for _, h in rss)


def phase(name: str) -> None:
    """A phase starts (to stderr: a profiler run beside this script starts and stops on it)."""
    print(f"[million] {name} (client {os.getpid()})", file=sys.stderr, flush=True)


def start_servers(processes: int, capacity: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mesh.server", "start", "--port", "0", "--processes", str(processes),
         "--capacity", str(capacity), "--max-len", "2000000"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert proc.stdout is not None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the servers exited ({proc.wait()})")
            if "ready on" in line:
                break
        found = []
        while time.monotonic() < deadline:
            found = mesh.servers(timeout=1.0)
            if len(found) >= processes:
                break
        if len(found) < processes:
            raise RuntimeError(f"discovery lists {len(found)} of {processes} servers")
    except BaseException:  # never leave the servers running
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    return proc


def create(cls: type, n: int, samples: list) -> tuple[list, float, float]:
    """Create ``n`` agents from one thread: (proxies, seconds until every creation was answered,
    seconds until the last ``to_dist()`` returned)."""
    step = max(1, n // 200)
    t0 = time.perf_counter()
    agents = []
    for i in range(n):
        agents.append(cls(i).to_dist())
        if i % step == 0:
            samples.append((time.perf_counter() - t0, i))
    returned = time.perf_counter() - t0
    samples.append((returned, n))
    from mesh import _pipeline  # every creation answered: the objects exist on their servers

    while _pipeline.pending():
        time.sleep(0.005)
    seconds = time.perf_counter() - t0
    samples.append((seconds, n))
    return agents, seconds, returned


def round_trip(agents: list, call, check, samples: list, issue_samples: list | None = None) -> tuple[float, int]:
    """Issue one call per agent, then read every reply in order (one plain thread)."""
    n = len(agents)
    step = max(1, n // 200)
    issue_samples = [] if issue_samples is None else issue_samples
    t0 = time.perf_counter()
    futures = []
    for i, a in enumerate(agents):
        futures.append(call(a, i))
        if i % step == 0:
            issue_samples.append((time.perf_counter() - t0, i))
    issued = time.perf_counter() - t0
    issue_samples.append((issued, n))
    samples.append((issued, 0))
    wrong = 0
    for i, f in enumerate(futures):
        if not check(i, f.result()):
            wrong += 1
        if i % step == 0:
            samples.append((time.perf_counter() - t0, i))
    seconds = time.perf_counter() - t0
    samples.append((seconds, n))
    return seconds, wrong


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=1_000_000)
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--capacity", type=int, default=32)
    ap.add_argument("--sleep-agents", type=int, default=None, help="agents of the sleeping round (default --agents)")
    ap.add_argument("--skip-sleep", action="store_true", help="leave out the sleeping round")
    ap.add_argument("--json")
    args = ap.parse_args()
    if os.environ.get("MILLION_CLIENT_GC"):  # an experiment: the client's collector thresholds ("a,b,c")
        import gc

        gc.set_threshold(*(int(x) for x in os.environ["MILLION_CLIENT_GC"].split(",")))
    proc = start_servers(args.processes, args.capacity)
    out: dict = {"benchmark": "million", "agents": args.agents, "processes": args.processes, "capacity": args.capacity}
    rows = []
    try:
        srv_base = servers_mem(proc.pid)[0]
        cli_base = mem(os.getpid())[0]
        phase("create")
        srv_pids = [p for p in descendants(proc.pid)]
        cpu0 = (cpu([os.getpid()]), cpu(srv_pids))
        create_samples: list = []
        agents, create_s, returned_s = create(Small, args.agents, create_samples)
        cpu1 = (cpu([os.getpid()]), cpu(srv_pids))
        srv_created = servers_mem(proc.pid)
        phase("round")
        round_samples: list = []
        issue_samples: list = []
        round_s, wrong = round_trip(agents, lambda a, i: a.ping(i), lambda i, v: v == 2 * i, round_samples, issue_samples)
        cpu2 = (cpu([os.getpid()]), cpu(srv_pids))
        srv = servers_mem(proc.pid)
        cli = mem(os.getpid())
        placed: dict[str, int] = {}
        for a in agents:
            placed[a._mesh_address] = placed.get(a._mesh_address, 0) + 1
        n = args.agents
        out.update({
            "create_s": create_s, "create_per_s": n / create_s, "create_returned_s": returned_s, "round_s": round_s, "calls_per_s": n / round_s,
            "wall_s": create_s + round_s, "wrong": wrong, "placed": placed,
            "server_rss": srv[0], "server_hwm": srv[1], "server_rss_base": srv_base, "server_rss_created": srv_created[0],
            "load": os.getloadavg(),
            "cpu_us_per_create": {"client": (cpu1[0] - cpu0[0]) / n * 1e6, "servers": (cpu1[1] - cpu0[1]) / n * 1e6},
            "cpu_us_per_call": {"client": (cpu2[0] - cpu1[0]) / n * 1e6, "servers": (cpu2[1] - cpu1[1]) / n * 1e6},
            "server_rss_per_agent": (srv_created[0] - srv_base) / n,
            "client_rss": cli[0], "client_hwm": cli[1], "client_rss_base": cli_base,
            "client_per_agent": (cli[0] - cli_base) / n,
            "progress": {"create": create_samples, "round": round_samples, "issue": issue_samples},
        })
        rows += [
            {"figure": f"create {n:,} agents (plain to_dist), every creation answered", "value": f"{create_s:.1f} s",
             "rate": f"{n / create_s:,.0f}/s"},
            {"figure": "  of which until the last to_dist() returned", "value": f"{returned_s:.1f} s",
             "rate": f"{n / returned_s:,.0f}/s"},
            {"figure": "round: one call each, every reply read", "value": f"{round_s:.1f} s", "rate": f"{n / round_s:,.0f} calls/s"},
            {"figure": "total wall (create + round)", "value": f"{create_s + round_s:.1f} s",
             "rate": f"goal <= {GOAL_WALL * n / 1e6:.0f} s at this scale"},
            {"figure": "wrong replies", "value": str(wrong), "rate": ""},
            {"figure": "CPU per creation: client / servers", "value": f"{(cpu1[0] - cpu0[0]) / n * 1e6:.0f} / "
             f"{(cpu1[1] - cpu0[1]) / n * 1e6:.0f} us", "rate": "(user + system, all threads)"},
            {"figure": "CPU per call of the round: client / servers", "value": f"{(cpu2[0] - cpu1[0]) / n * 1e6:.0f} / "
             f"{(cpu2[1] - cpu1[1]) / n * 1e6:.0f} us", "rate": "(user + system, all threads)"},
            {"figure": "servers RSS after creation (sum)", "value": f"{srv_created[0] / 2**20:.0f} MiB",
             "rate": f"{(srv_created[0] - srv_base) / n:.0f} B/agent"},
            {"figure": "servers RSS after the round (sum; peak)", "value": f"{srv[0] / 2**20:.0f} MiB; {srv[1] / 2**20:.0f} MiB",
             "rate": f"{(srv[0] - srv_base) / n:.0f} B/agent (results held)"},
            {"figure": "client RSS (peak)", "value": f"{cli[0] / 2**20:.0f} MiB ({cli[1] / 2**20:.0f})",
             "rate": f"{(cli[0] - cli_base) / n:.0f} B/agent"},
            {"figure": "agents per server", "value": " / ".join(str(v) for v in sorted(placed.values())), "rate": ""},
            {"figure": "load average (1 min) at the end", "value": f"{os.getloadavg()[0]:.1f}", "rate": ""},
        ]
        phase("round done")
        del agents
        if not args.skip_sleep:
            m = args.sleep_agents or args.agents
            rng = random.Random(16)
            sleeps = [rng.uniform(0.5, 2.0) for _ in range(m)]
            phase("sleep create")
            nappers, nap_create_s, _ = create(Napper, m, [])
            phase("sleep round")
            nap_samples: list = []
            cpu3 = (cpu([os.getpid()]), cpu(srv_pids))
            nap_s, nap_wrong = round_trip(nappers, lambda a, i: a.nap(sleeps[i]), lambda i, v: v == i, nap_samples)
            cpu4 = (cpu([os.getpid()]), cpu(srv_pids))
            nap_cpu = {"client": (cpu4[0] - cpu3[0]) / m * 1e6, "servers": (cpu4[1] - cpu3[1]) / m * 1e6}
            srv = servers_mem(proc.pid)
            out["sleep"] = {"agents": m, "create_s": nap_create_s, "round_s": nap_s, "longest_sleep_s": max(sleeps),
                            "wrong": nap_wrong, "server_rss": srv[0], "client_rss": mem(os.getpid())[0],
                            "cpu_us_per_call": nap_cpu,
                            "progress": nap_samples}
            rows += [
                {"figure": f"create {m:,} coroutine agents", "value": f"{nap_create_s:.1f} s", "rate": f"{m / nap_create_s:,.0f}/s"},
                {"figure": "round, each reply sleeps 0.5-2 s", "value": f"{nap_s:.2f} s",
                 "rate": f"longest sleep {max(sleeps):.2f} s; {m / nap_s:,.0f} calls/s"},
                {"figure": "wrong replies (sleeping round)", "value": str(nap_wrong), "rate": ""},
                {"figure": "CPU per call of the sleeping round: client / servers",
                 "value": f"{nap_cpu['client']:.0f} / {nap_cpu['servers']:.0f} us", "rate": "(user + system, all threads)"},
            ]
    finally:
        phase("end")
        t_end = time.perf_counter()
        mesh.shutdown()
        t_bye = time.perf_counter()
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out["shutdown_s"], out["servers_stop_s"] = t_bye - t_end, time.perf_counter() - t_bye
        rows.append({"figure": "mesh.shutdown() / the servers' stop", "value": f"{t_bye - t_end:.1f} / "
                     f"{time.perf_counter() - t_bye:.1f} s", "rate": ""})
    print()
    print(table(rows, ["figure", "value", "rate"]))
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
