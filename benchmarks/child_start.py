"""Child start: 5 objects with ``to_dist()`` and no server running, until each answered one call.

Each run is a fresh Python process (nothing warm): it imports mesh, then times
``[Echo().to_dist() for _ in range(5)]`` (the first one starts the child server)
plus one ``echo`` call on each, and prints the figures as JSON. Reported: the
median over runs. The import of mesh is timed separately (not in the target).
Phases (not judged; where the time goes): ``ready_s``, when the child server's
ready line was read; ``after_ready_s``, the rest (connection, creations, calls);
the CPU time of the parent (all its threads, over the timed part) and of the
child server (from its start), from /proc (Linux).

Bytecode: this environment sets PYTHONDONTWRITEBYTECODE=1 and the source tree has
no __pycache__, so every process (the child server too) compiles mesh and
transport from source. An installed package has its .pyc files, so the runs are
made in two modes: "pyc" (PYTHONPYCACHEPREFIX=benchmarks/out/pycache, primed by
one untimed run; the source tree is not touched) and "source" (the environment
as it is). The target is judged on "pyc", the state of a normal install.

    bin/isolated .venv/bin/python benchmarks/child_start.py [--objects 5] [--runs 5] [--json PATH]
        [--discovery on|off|both]

Discovery: "on" (the default, as users run it: ``to_dist()`` first looks for
servers, finds none, and falls back to the child server) or "off"
(``MESH_DISCOVERY=0``: straight to the child server). Each run gets its own
empty local registry and mDNS service type, so no other server is found.

Target: median <= 0.2 s, with discovery on.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import median, table, write_json  # noqa: E402

TARGET = 0.2

CHILD = r"""
import json, os, sys, time
t0 = time.perf_counter()
sys.path[:0] = [{root!r}, {bench!r}]  # the project first: benchmarks/discovery.py must not shadow the package
import mesh
from _objects import Echo
from mesh.server import _launcher
ready = []
_read = _launcher._read_ready_line
def _timed(*a, **k):  # when the child's ready line was read (the phases, below)
    line = _read(*a, **k)
    ready.append(time.perf_counter())
    return line
_launcher._read_ready_line = _timed
def cpu(pid):  # CPU time of every thread of a process, s (Linux schedstat; None elsewhere)
    try:
        tasks = os.listdir(f"/proc/{{pid}}/task")
        return sum(int(open(f"/proc/{{pid}}/task/{{t}}/schedstat").read().split()[0]) for t in tasks) / 1e9
    except (OSError, ValueError, IndexError):
        return None
c1 = cpu(os.getpid())
t1 = time.perf_counter()
objs = [Echo().to_dist() for _ in range({n})]
t2 = time.perf_counter()
answers = [o.echo(i) for i, o in enumerate(objs)]
t3 = time.perf_counter()
assert answers == list(range({n})), answers
from mesh import _placement
child_pid = _placement._child.pid
c3, child_cpu = cpu(os.getpid()), cpu(child_pid)
mesh.shutdown()
t4 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "to_dist_s": t2 - t1, "first_calls_s": t3 - t2,
                  "total_s": t3 - t1, "shutdown_s": t4 - t3, "child_pid": child_pid,
                  "ready_s": ready[0] - t1 if ready else None, "after_ready_s": t3 - ready[0] if ready else None,
                  "parent_cpu_s": None if c1 is None else c3 - c1, "child_cpu_s": child_cpu}}), flush=True)
"""


HERE = os.path.dirname(os.path.abspath(__file__))
PYCACHE = os.path.join(HERE, "out", "pycache")


def one_run(n: int, pyc: bool, discovery: bool = True) -> dict:
    code = CHILD.format(bench=HERE, root=os.path.dirname(HERE), n=n)
    env = dict(os.environ, MESH_DISCOVERY="1" if discovery else "0")
    env.pop("MESH_PEERS", None)
    env.pop("MESH_REDIS_DISCOVERY_URL", None)
    env["MESH_SERVICE_TYPE"] = f"_cs{uuid.uuid4().hex[:8]}._tcp.local."
    env["MESH_REGISTRY_DIR"] = os.path.join(tempfile.gettempdir(), f"child-start-{uuid.uuid4().hex}")
    if pyc:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = PYCACHE
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPYCACHEPREFIX", None)
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    finally:
        shutil.rmtree(env["MESH_REGISTRY_DIR"], ignore_errors=True)
    if out.returncode != 0:
        raise RuntimeError(f"measurement process failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1]
    return json.loads(line)


# where the time goes: the child's ready line read (from the first to_dist), the rest after it, and the CPU
# of the parent (all its threads, over the creations and calls) and of the child (its whole life until then)
PHASES = ["ready_s", "after_ready_s", "parent_cpu_s", "child_cpu_s"]


def _median(rs: list[dict], k: str) -> float | None:
    xs = [r[k] for r in rs if r.get(k) is not None]
    return median(xs) if xs else None


def _pick(fn: Any, rs: list[dict], k: str) -> float | None:
    xs = [r[k] for r in rs if r.get(k) is not None]
    return fn(xs) if xs else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=5, help="objects created (default 5)")
    ap.add_argument("--runs", type=int, default=5, help="fresh processes (default 5)")
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--mode", choices=("both", "pyc", "source"), default="both",
                    help="bytecode mode (default both; see the module docstring)")
    ap.add_argument("--discovery", choices=("on", "off", "both"), default="on",
                    help="discovery in to_dist() (default on, as users run it; both: report the two)")
    args = ap.parse_args()
    byte_modes = ["pyc", "source"] if args.mode == "both" else [args.mode]
    disc_modes = ["on", "off"] if args.discovery == "both" else [args.discovery]
    modes = [f"{b}/discovery-{d}" for d in disc_modes for b in byte_modes]
    if "pyc" in byte_modes:
        one_run(args.objects, pyc=True)  # prime the bytecode cache (untimed)
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for i in range(args.runs):
        for mode in modes:  # alternate, so that load from other processes hits all alike
            b, d = mode.split("/discovery-")
            runs[mode].append(one_run(args.objects, pyc=b == "pyc", discovery=d == "on"))
            r = runs[mode][-1]
            print(f"run {i + 1} [{mode}]: total {r['total_s']:.3f} s (to_dist {r['to_dist_s']:.3f} s, "
                  f"first calls {r['first_calls_s']:.3f} s; import mesh {r['import_s']:.3f} s)", flush=True)
    keys = ["total_s", "to_dist_s", "first_calls_s", "import_s", "shutdown_s", *PHASES]
    med = {mode: {k: _median(rs, k) for k in keys} for mode, rs in runs.items()}
    rows = [{"mode": mode, "figure": k, "median (s)": med[mode][k], "min (s)": _pick(min, rs, k),
             "max (s)": _pick(max, rs, k)} for mode, rs in runs.items() for k in keys if med[mode][k] is not None]
    print()
    print(table(rows, ["mode", "figure", "median (s)", "min (s)", "max (s)"]))
    judged = f"{'pyc' if 'pyc' in byte_modes else byte_modes[0]}/discovery-{disc_modes[0]}"
    ok = med[judged]["total_s"] <= TARGET
    for mode in modes:
        print(f"[{mode}] median total {med[mode]['total_s']:.3f} s for {args.objects} objects (target <= {TARGET} s): "
              f"{'PASS' if med[mode]['total_s'] <= TARGET else 'MISS'}{' (judged)' if mode == judged else ''}")
    write_json(args.json, {
        "benchmark": "child_start", "objects": args.objects, "runs": runs, "median": med[judged],
        "median_by_mode": med, "judged_mode": judged,
        "target": f"median total <= {TARGET} s ({judged})", "pass": ok,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
