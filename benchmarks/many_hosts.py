"""Many hosts (issue 16, target 5): servers on H virtual hosts (tests/vlan.py), one client host that
finds them by discovery and places agents with plain ``to_dist()``.

    bin/isolated .venv/bin/python benchmarks/many_hosts.py [--hosts 5,20,50] [--agents 100000]
        [--capacity 8] [--json PATH]

For each H: a virtual LAN of H + 1 hosts; a server on each of hosts 1..H (mDNS, a shared secret);
on host H + 1 a fresh client process measures

- discovery: ``mesh.servers()`` (default timeout 1 s) until it returns, and how many it lists
  (goal: all H, in <= 1 s; it returns once the answers are in, not at its timeout);
- creation: ``--agents`` agents with ``to_dist()`` (no host), agents/s (goal: flat in H), and how long
  the first H of them took (the first object of a class on a server waits for its reply);
- placement: the agents per server, the largest deviation from even (goal: within +-10%);
- one call per agent, every reply read (calls/s);
- CPU: the client's per creation (and per thread: the creating thread, the I/O thread, libzmq's,
  discovery's), the servers' (all H together) per creation, and the servers' while idle (before the
  client starts), as a share of one core: where the time of many hosts goes;
- objects per ``create_many`` (quartiles, the lowest and highest host's mean) and requests per creation.

Creation is timed until every creation was answered (a pipelined ``to_dist()`` returns before).
Diagnostics (environment): ``MANY_HOSTS_COUNT_TURNS=1`` counts the client's I/O turns and the
sockets each polls; ``MANY_HOSTS_PROFILE=1`` counts Python calls per creation on the creating and
I/O threads (cProfile: slower, deterministic counts); ``MANY_HOSTS_SHARE=0.2`` (an experiment)
makes the placement runs that part of the average fill instead of 0.05.

Servers are separate processes on the 2 shared cores: with 50 hosts they compete with the client,
so the figures are the machine's, not the network's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for path in (ROOT, os.path.join(ROOT, "tests"), HERE):
    if path not in sys.path:
        sys.path.insert(0, path)

from _common import table, write_json  # noqa: E402
from vlan import LineReader, VirtualLan, in_isolated_netns  # noqa: E402

PORT = 7200

CLIENT = textwrap.dedent('''
    import json, os, sys, threading, time
    import mesh
    from _million_agents import Small
    import mesh._create_many as batches
    from mesh._pipeline import pending
    sent = [0]
    sizes = {}  # address -> objects per create_many sent there
    def counted(batch, send=batches._send):  # how many objects a create_many carried, per host
        sent[0] += 1
        sizes.setdefault(batch.address, []).append(len(batch.ids))
        send(batch)
    batches._send = counted
    from transport._loop import Loop
    turns = [0, 0]  # I/O turns, poll items over them
    def counted_turn(self, me, extra=None, timeout=None, turn=Loop.turn):
        turns[0] += 1
        turns[1] += len(self._poller.sockets)
        return turn(self, me, extra, timeout)
    if os.environ.get("MANY_HOSTS_COUNT_TURNS"):
        Loop.turn = counted_turn
    def sizes_summary(sizes):  # objects per create_many: quartiles over all, and the hosts' means (lowest, highest)
        every = sorted(n for v in sizes.values() for n in v)
        means = sorted(sum(v) / len(v) for v in sizes.values())
        if not every:
            return {}
        return {"p25": every[len(every) // 4], "p50": every[len(every) // 2], "p75": every[3 * len(every) // 4],
                "max": every[-1], "host_mean_min": means[0], "host_mean_max": means[-1], "hosts": len(means)}
    def threads_cpu():  # {thread name: CPU s} of this process, from schedstat (ns)
        out = {}
        names = {t.native_id: t.name.split("-")[0] if t.name.startswith("Thread") else t.name for t in threading.enumerate()}
        for tid in os.listdir("/proc/self/task"):
            try:
                name = names.get(int(tid))
                if name is None:
                    with open(f"/proc/self/task/{tid}/comm") as f:
                        name = f.read().strip()
                with open(f"/proc/self/task/{tid}/schedstat") as f:
                    out[name] = out.get(name, 0) + int(f.read().split()[0]) / 1e9
            except (OSError, ValueError):
                pass
        return out
    hosts, n = int(sys.argv[1]), int(sys.argv[2])
    if os.environ.get("MANY_HOSTS_SHARE"):  # an experiment: runs of this part of the average fill (longer runs, bigger batches)
        import mesh.client._spread as spread
        spread.SHARE = float(os.environ["MANY_HOSTS_SHARE"])
    t = time.perf_counter()
    found = mesh.servers()
    first = time.perf_counter() - t
    first_count = len(found)
    polls = 0
    while len(found) < hosts and time.perf_counter() - t < 30:
        polls += 1
        found = mesh.servers(timeout=0.2)
    listed = time.perf_counter() - t
    print("CREATING", flush=True)
    sys.stdin.readline()  # the parent has read the servers' CPU
    profiles = None
    if os.environ.get("MANY_HOSTS_PROFILE"):  # deterministic counts: Python calls on the creating and I/O threads
        import cProfile, pstats
        from mesh.client._client import get_client
        profiles = [cProfile.Profile(), cProfile.Profile()]
        on_io = threading.Event()
        get_client().node.call_soon(lambda: (profiles[1].enable(), on_io.set()))
        on_io.wait(5)
        profiles[0].enable()
    t, c = time.perf_counter(), time.process_time()
    th0, turns0 = threads_cpu(), list(turns)
    agents = [Small(i).to_dist() for i in range(min(hosts, n))]  # the first on each server: a first contact each
    first_s = time.perf_counter() - t
    agents += [Small(i).to_dist() for i in range(len(agents), n)]
    issued = time.perf_counter() - t
    while pending():  # until every creation was answered (a pipelined to_dist() returns before)
        time.sleep(0.001)
    answered, client_cpu = time.perf_counter() - t, time.process_time() - c
    calls = {}
    if profiles:
        profiles[0].disable()
        off = threading.Event()
        get_client().node.call_soon(lambda: (profiles[1].disable(), off.set()))
        off.wait(5)
        for name, prof in zip(("creating", "io"), profiles):
            st = pstats.Stats(prof).stats
            total = sum(v[1] for v in st.values())
            top = sorted(((v[1], f"{k[0].rsplit('/', 1)[-1]}:{k[2]}") for k, v in st.items()), reverse=True)[:12]
            calls[name] = {"total": total, "top": top}
    th1 = threads_cpu()
    threads = {k: v - th0.get(k, 0) for k, v in th1.items() if v - th0.get(k, 0) > 1e-4}
    turns_n, polled = turns[0] - turns0[0], turns[1] - turns0[1]
    print("CREATED", flush=True)
    sys.stdin.readline()
    t = time.perf_counter()
    futs = [a.ping(i) for i, a in enumerate(agents)]
    created = None
    wrong = sum(1 for i, f in enumerate(futs) if f.result() != 2 * i)
    round_s = time.perf_counter() - t
    placed = {}
    for a in agents:
        placed[a._mesh_address] = placed.get(a._mesh_address, 0) + 1
    print(json.dumps({"servers_s": first, "servers_listed": first_count, "all_listed_s": listed, "polls": polls,
                      "listed": len(found), "create_s": answered, "issued_s": issued, "first_contacts_s": first_s, "batches": sent[0], "batch_sizes": sizes_summary(sizes), "client_cpu_s": client_cpu, "threads_cpu_s": threads, "calls": calls, "turns": turns_n, "polled": polled, "round_s": round_s, "wrong": wrong,
                      "placed": sorted(placed.values())}), flush=True)
    mesh.shutdown()
''')


def env() -> dict:
    e = dict(os.environ)
    e.pop("MESH_REGISTRY_DIR", None)  # per-namespace local registries: the hosts find each other over mDNS
    e.pop("MESH_PEERS", None)
    e.update({"MESH_SECRET": "many-hosts-benchmark-secret", "MESH_DISCOVERY": "1",
              "PYTHONPATH": os.pathsep.join([ROOT, HERE])})
    return e


def cpu_s(pids: list[int]) -> float:
    """CPU seconds of ``pids`` so far: every thread's run time in ns (``/proc/PID/task/TID/schedstat``;
    the clock ticks of ``/proc/PID/stat`` are 10 ms, as much as one server's whole share of a short run)."""
    total = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass  # the thread ended
    return total / 1e9


WARM = "from _million_agents import *  # noqa: F401,F403 - imported at the server's start (--agent-dir)\n"


def one(hosts: int, agents: int, capacity: int, idle_s: float = 2.0, warm: bool = False) -> dict:
    with VirtualLan(n=hosts + 1, prefix="mh") as lan, tempfile.TemporaryDirectory() as agent_dir:
        readers, pids = [], []
        extra: list[str] = []
        if warm:  # the agents' module is imported at start, as a deployment that ships its classes does
            with open(os.path.join(agent_dir, "warm_agents.py"), "w") as f:
                f.write(WARM)
            extra = ["--agent-dir", agent_dir]
        t = time.perf_counter()
        for i in range(1, hosts + 1):
            proc = lan.popen(i, [sys.executable, "-m", "mesh.server", "start", "--host", lan.host_ip(i),
                                 "--port", str(PORT), "--name", f"host{i}", "--capacity", str(capacity),
                                 "--max-len", str(max(10000, 2 * agents)), *extra],
                             stdout=subprocess.PIPE, text=True, env=env())
            readers.append(LineReader(proc.stdout))  # type: ignore[arg-type]
            pids.append(proc.pid)
        for r in readers:
            r.wait_for(lambda line: "ready on" in line, timeout=120)
        started = time.perf_counter() - t
        c0, t0 = cpu_s(pids), time.perf_counter()
        time.sleep(idle_s)  # the servers' own background work (mDNS, heartbeats), nothing asked of them
        idle = (cpu_s(pids) - c0) / (time.perf_counter() - t0)
        err = tempfile.TemporaryFile("w+")
        client = lan.popen(hosts + 1, [sys.executable, "-c", CLIENT, str(hosts), str(agents)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=err, text=True, env=env(), cwd=ROOT)
        lines = LineReader(client.stdout)  # type: ignore[arg-type]
        lines.wait_for(lambda line: "CREATING" in line, timeout=120)
        c0 = cpu_s(pids)
        client.stdin.write("\n")  # type: ignore[union-attr]
        client.stdin.flush()  # type: ignore[union-attr]
        lines.wait_for(lambda line: "CREATED" in line, timeout=1800)
        servers_cpu = cpu_s(pids) - c0
        client.stdin.write("\n")  # type: ignore[union-attr]
        client.stdin.flush()  # type: ignore[union-attr]
        try:
            line = lines.wait_for(lambda text: text.startswith("{") and text, timeout=1800)
            client.stdin.close()  # type: ignore[union-attr]
            client.wait(timeout=60)
        except (TimeoutError, EOFError) as exc:
            client.kill()
            err.seek(0)
            raise RuntimeError(f"client failed: {exc}\n{err.read()[-4000:]}") from None
        res = json.loads(line)
        res.update({"servers_idle_cpu": idle, "servers_cpu_s": servers_cpu, "warm": warm})
    even = agents / hosts
    res.update({"hosts": hosts, "agents": agents, "servers_started_s": started,
                "create_per_s": agents / res["create_s"], "calls_per_s": agents / res["round_s"],
                "client_us_per_create": 1e6 * res["client_cpu_s"] / agents,
                "servers_us_per_create": 1e6 * res["servers_cpu_s"] / agents,
                "max_deviation": max(abs(v - even) for v in res["placed"]) / even if res["placed"] else None})
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", default="5,20,50", help="comma-separated host counts (default 5,20,50)")
    ap.add_argument("--agents", type=int, default=100_000)
    ap.add_argument("--capacity", type=int, default=8)
    ap.add_argument("--warm", action="store_true",
                    help="servers import the agents' module at start (--agent-dir): the first object on each "
                         "server then costs the mesh's work only, not the module's import (~10 ms of CPU each, "
                         "which 50 servers on 2 cores pay one after the other)")
    ap.add_argument("--json")
    args = ap.parse_args()
    if not in_isolated_netns():
        print("run inside bin/isolated: it builds virtual LANs", file=sys.stderr)
        return 2
    results = []
    for h in [int(x) for x in args.hosts.split(",") if x.strip()]:
        r = one(h, args.agents, args.capacity, warm=args.warm)
        results.append(r)
        print(f"{h} hosts: servers() {r['servers_s']:.3f} s listing {r['servers_listed']}/{h}; "
              f"create {r['create_per_s']:,.0f}/s; deviation {100 * r['max_deviation']:.1f}%; "
              f"CPU per creation client {r['client_us_per_create']:.0f} us, servers {r['servers_us_per_create']:.0f} us "
              f"({1e3 * r['servers_cpu_s'] / h:.1f} ms each); objects per create_many {r['agents'] / max(r['batches'], 1):.0f}; "
              f"idle servers {100 * r['servers_idle_cpu']:.0f}% of a core; load {os.getloadavg()[0]:.1f}", flush=True)
        threads = ", ".join(f"{k} {1e6 * v / r['agents']:.1f}" for k, v in sorted(r["threads_cpu_s"].items()))
        print(f"    client threads us/creation: {threads}; I/O turns {r['turns']} "
              f"({r['turns'] / r['agents']:.3f} per creation, {r['polled'] / max(r['turns'], 1):.0f} poll items each); "
              f"issued {r['issued_s']:.2f} s, answered {r['create_s']:.2f} s", flush=True)
        b = r["batch_sizes"]
        if b:
            print(f"    objects per create_many: quartiles {b['p25']} / {b['p50']} / {b['p75']}, max {b['max']}; "
                  f"per host mean {b['host_mean_min']:.0f}-{b['host_mean_max']:.0f} over {b['hosts']} hosts; "
                  f"requests per creation {r['batches'] / r['agents']:.4f}", flush=True)
        for name, c in r["calls"].items():
            top = "; ".join(f"{fn} {n / r['agents']:.2f}" for n, fn in c["top"])
            print(f"    Python calls per creation, {name} thread: {c['total'] / r['agents']:.1f} ({top})", flush=True)
    rows = [{"hosts": r["hosts"], "servers() s": r["servers_s"], "listed": f"{r['servers_listed']}/{r['hosts']}",
             "all listed s": r["all_listed_s"], "agents": r["agents"], "create/s": round(r["create_per_s"]),
             "max dev from even %": round(100 * r["max_deviation"], 2), "calls/s": round(r["calls_per_s"]),
             "wrong": r["wrong"], "first H creations s": round(r["first_contacts_s"], 3),
             "objects per create_many": round(r["agents"] / max(r["batches"], 1)),
             "client CPU us/create": round(r["client_us_per_create"], 1),
             "servers CPU us/create": round(r["servers_us_per_create"], 1),
             "servers CPU ms each": round(1e3 * r["servers_cpu_s"] / r["hosts"], 1),
             "idle servers CPU %": round(100 * r["servers_idle_cpu"], 1)} for r in results]
    print()
    print(table(rows, list(rows[0])))
    write_json(args.json, {"benchmark": "many_hosts", "results": results,
                           "goals": "servers() <= 1 s listing all; placement within +-10% of even; create/s flat in hosts"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
