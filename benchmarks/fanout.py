"""Fan-out: 200 agents on one server (subprocess), each called once; time and server memory.

Creates N ``AgentBase`` subclasses with a trivial ``reply`` on one agent server in a
subprocess, then issues ``agent(msg)`` on every one (Placeholders, at once) and reads
every reply's ``content``. Timed: the calls (issue + read all), and separately the
creation (the target applies to the calls; creation + first round is printed too). Then reads the server's PSS from /proc/<pid>/smaps_rollup. Several rounds
of calls on the same agents; the median is reported.

    bin/isolated .venv/bin/python benchmarks/fanout.py [--agents 200] [--rounds 5] [--json PATH]

Targets: calls (issue + read all) <= 0.1 s; server PSS <= 60 MiB.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("MESH_DISCOVERY", "0")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import median, table, write_json  # noqa: E402
from _objects import Replier  # noqa: E402

import mesh  # noqa: E402
from mesh import Msg  # noqa: E402

TARGET_S = 0.1
TARGET_PSS_MIB = 60


def smaps(pid: int) -> dict[str, float]:
    """Pss and Rss of a process, MiB."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("Pss", "Rss"):
                out[key] = int(rest.split()[0]) / 1024
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=200, help="agents (default 200)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of one call per agent (default 5)")
    ap.add_argument("--capacity", type=int, default=32, help="server capacity (default 32)")
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args()
    mesh.init(discovery=False)

    server = mesh.AgentServer(port=0, capacity=args.capacity, advertise=False).launch(in_subprocess=True)
    try:
        mem_empty = smaps(server.pid)
        where = {"host": server.host, "port": server.port}
        t = time.perf_counter()
        agents = [Replier(f"A{i}", to_dist=where) for i in range(args.agents)]
        create_s = time.perf_counter() - t
        mem_created = smaps(server.pid)
        rounds = []
        for r in range(args.rounds):
            msg = Msg("user", f"round {r}", role="user")
            t = time.perf_counter()
            replies = [a(msg) for a in agents]
            issued = time.perf_counter() - t
            contents = [p.content for p in replies]
            total = time.perf_counter() - t
            assert contents == ["ok"] * args.agents, contents[:3]
            rounds.append({"issue_s": issued, "total_s": total})
            print(f"round {r + 1}: issue {issued * 1e3:.1f} ms, issue + read all {total * 1e3:.1f} ms", flush=True)
        time.sleep(0.2)
        mem_after = smaps(server.pid)
    finally:
        server.shutdown()
        mesh.shutdown()

    total = median([r["total_s"] for r in rounds])
    issue = median([r["issue_s"] for r in rounds])
    first = rounds[0]["total_s"]
    rows = [
        {"figure": f"create {args.agents} agents (s)", "value": create_s, "target": ""},
        {"figure": f"call {args.agents} agents, issue (s, median)", "value": issue, "target": ""},
        {"figure": f"call {args.agents} agents, issue + read all (s, median)", "value": total, "target": f"<= {TARGET_S}"},
        {"figure": "  same, first round (s)", "value": first, "target": ""},
        {"figure": "create + first round of calls (s)", "value": create_s + first, "target": ""},
        {"figure": "server PSS, empty (MiB)", "value": mem_empty["Pss"], "target": ""},
        {"figure": "server PSS, agents created (MiB)", "value": mem_created["Pss"], "target": ""},
        {"figure": "server PSS after calls (MiB)", "value": mem_after["Pss"], "target": f"<= {TARGET_PSS_MIB}"},
        {"figure": "server RSS after calls (MiB)", "value": mem_after["Rss"], "target": ""},
    ]
    print()
    print(table(rows, ["figure", "value", "target"]))
    ok_time = total <= TARGET_S
    ok_mem = mem_after["Pss"] <= TARGET_PSS_MIB
    print(f"\ncalls {total:.3f} s (target <= {TARGET_S} s): {'PASS' if ok_time else 'MISS'}; "
          f"server PSS {mem_after['Pss']:.1f} MiB (target <= {TARGET_PSS_MIB} MiB): {'PASS' if ok_mem else 'MISS'}")
    write_json(args.json, {
        "benchmark": "fanout", "agents": args.agents, "capacity": args.capacity, "create_s": create_s,
        "rounds": rounds, "calls_total_s_median": total, "create_plus_first_round_s": create_s + first, "calls_issue_s_median": issue,
        "server_mem_mib": {"empty": mem_empty, "created": mem_created, "after_calls": mem_after},
        "target": f"calls <= {TARGET_S} s and PSS <= {TARGET_PSS_MIB} MiB",
        "pass_time": ok_time, "pass_memory": ok_mem, "pass": ok_time and ok_mem,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
