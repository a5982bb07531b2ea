"""Start-up and memory (issue 16, target 0): a plain server's memory, raw pyzmq beside it; how long a
server takes to start; and ``init`` of 5 agents against a running server in a fresh process.

    bin/isolated .venv/bin/python benchmarks/footprint.py [--runs 5] [--json PATH]

1. Memory of an idle server after one call (``/proc/PID/smaps_rollup``, as ``smem`` reads it):
   RSS, PSS and USS (private pages: what the process alone costs), for ``zmq-agent-server start``
   and for the raw pyzmq server of ``_raw.py``. Target: PSS <= 17 MiB. The same for a server that
   advertises itself (no ``--no-advertise``: as ``zmq-agent-server start`` runs by default; mDNS
   inside the isolated namespace), the figure issue 16 asks for ("discovery on as users run it").
2. Server start: ``zmq-agent-server start --port 0`` until its ready line (a fresh interpreter;
   with ``--no-advertise`` and advertising),
   and ``AgentServer(...).launch()`` from a process that imported mesh (the child server).
   Target: child server < 0.1 s.
3. Init against a running server: a fresh process imports mesh (timed apart), then creates 5
   agents with ``to_dist={"host":..., "port":...}`` (timed: the "init" figure) and calls each once.
   Discovery on (``MESH_DISCOVERY=1``), as users run it. Target: init <= 3 ms.
4. A server after ``Msg`` replies: a fresh plain server, a fresh process creates 5 ``Replier``
   agents (``reply`` returns a ``Msg``) and calls each once with a ``Msg``; the first reply is timed
   apart from the next four (a server that had to import cloudpickle for its first ``Msg`` paid it
   there), then the server's memory as in 1.

Bytecode as in ``child_start.py``: a primed cache under benchmarks/out/pycache (an installed package).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import ROOT, median, table, write_json  # noqa: E402
from _raw import RawClient, RawServer  # noqa: E402

PYCACHE = os.path.join(HERE, "out", "pycache")
TARGETS = {"pss_mib": 17.0, "child_start_s": 0.1, "init_s": 0.003}

INIT = r"""
import json, sys, time
sys.path[:0] = [{root!r}, {bench!r}]
t0 = time.perf_counter()
import mesh
from _objects import Echo
t1 = time.perf_counter()
objs = [Echo(to_dist={{"host": "127.0.0.1", "port": {port}}}) for _ in range(5)]
t2 = time.perf_counter()
assert [o.echo(i) for i, o in enumerate(objs)] == list(range(5))
t3 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "init_s": t2 - t1, "first_calls_s": t3 - t2}}))
"""

MSG_REPLY = r"""
import json, sys, time
sys.path[:0] = [{root!r}, {bench!r}]
import mesh
from mesh import Msg
from _objects import Replier
objs = [Replier(f"r{{i}}", to_dist={{"host": "127.0.0.1", "port": {port}}}) for i in range(5)]
t0 = time.perf_counter()
assert objs[0](Msg("user", "hi")).content == "ok"
t1 = time.perf_counter()
later = []
for o in objs[1:]:
    t = time.perf_counter()
    assert o(Msg("user", "hi")).content == "ok"
    later.append(time.perf_counter() - t)
print(json.dumps({{"first_msg_reply_s": t1 - t0, "next_msg_reply_s": sorted(later)[len(later) // 2]}}))
"""

CHILD = r"""
import json, sys, time
sys.path[:0] = [{root!r}]
import mesh
t = time.perf_counter()
s = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=True)
t1 = time.perf_counter()
s.shutdown()
print(json.dumps({{"child_start_s": t1 - t}}))
"""


def env(discovery: bool = False) -> dict:
    e = dict(os.environ, MESH_DISCOVERY="1" if discovery else "0", PYTHONPYCACHEPREFIX=PYCACHE)
    e.pop("PYTHONDONTWRITEBYTECODE", None)
    return e


def smaps(pid: int) -> dict[str, float]:
    """Rss, Pss and Uss (Private_Clean + Private_Dirty) of ``pid``, MiB."""
    got: dict[str, float] = {}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                got[parts[0].rstrip(":")] = int(parts[1]) / 1024
    return {"rss": got.get("Rss", 0.0), "pss": got.get("Pss", 0.0),
            "uss": got.get("Private_Clean", 0.0) + got.get("Private_Dirty", 0.0)}


def start_server(advertise: bool = False) -> tuple[subprocess.Popen, int, float]:
    t = time.perf_counter()
    flags = [] if advertise else ["--no-advertise"]
    proc = subprocess.Popen([sys.executable, "-m", "mesh.server", "start", "--port", "0", *flags],
                            stdout=subprocess.PIPE, text=True, env=env(advertise), cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    seconds = time.perf_counter() - t
    if "ready on" not in line:
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    port = int(line.split("ready on ")[1].split()[0].rsplit(":", 1)[1])
    return proc, port, seconds


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def fresh(code: str, discovery: bool = False) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(discovery), timeout=120)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args()
    fresh(CHILD.format(root=ROOT))  # prime the bytecode cache
    mem_mesh, mem_adv, mem_raw, start_s, adv_start_s, child_s, init = [], [], [], [], [], [], []
    mem_msg, msg_reply = [], []
    for _ in range(args.runs):
        proc, port, seconds = start_server()
        try:
            start_s.append(seconds)
            init.append(fresh(INIT.format(root=ROOT, bench=HERE, port=port), discovery=True))
            mem_mesh.append(smaps(proc.pid))
        finally:
            stop(proc)
        proc, port, seconds = start_server(advertise=True)
        try:
            adv_start_s.append(seconds)
            fresh(INIT.format(root=ROOT, bench=HERE, port=port))
            mem_adv.append(smaps(proc.pid))
        finally:
            stop(proc)
        proc, port, _ = start_server()
        try:
            msg_reply.append(fresh(MSG_REPLY.format(root=ROOT, bench=HERE, port=port)))
            mem_msg.append(smaps(proc.pid))
        finally:
            stop(proc)
        with RawServer() as raw:
            client = RawClient(raw.address)
            client.echo(1)
            client.close()
            mem_raw.append(smaps(raw.pid))
        child_s.append(fresh(CHILD.format(root=ROOT))["child_start_s"])

    def med(rows: list[dict], key: str) -> float:
        return median([r[key] for r in rows])

    res = {
        "server_mib": {k: med(mem_mesh, k) for k in ("rss", "pss", "uss")},
        "raw_server_mib": {k: med(mem_raw, k) for k in ("rss", "pss", "uss")},
        "advertising_server_mib": {k: med(mem_adv, k) for k in ("rss", "pss", "uss")},
        "msg_server_mib": {k: med(mem_msg, k) for k in ("rss", "pss", "uss")},
        "first_msg_reply_s": med(msg_reply, "first_msg_reply_s"), "next_msg_reply_s": med(msg_reply, "next_msg_reply_s"),
        "server_start_s": median(start_s), "advertising_server_start_s": median(adv_start_s),
        "child_start_s": median(child_s),
        "init_s": med(init, "init_s"), "init_first_calls_s": med(init, "first_calls_s"), "import_s": med(init, "import_s"),
        "runs": {"server": mem_mesh, "advertising": mem_adv, "raw": mem_raw, "start_s": start_s, "advertising_start_s": adv_start_s, "child_start_s": child_s, "init": init, "msg_server": mem_msg, "msg_reply": msg_reply},
    }
    m, r, a, g = res["server_mib"], res["raw_server_mib"], res["advertising_server_mib"], res["msg_server_mib"]
    rows = [
        {"figure": "server PSS MiB (RSS / USS)", "mesh": f"{m['pss']:.1f} ({m['rss']:.1f} / {m['uss']:.1f})",
         "raw pyzmq": f"{r['pss']:.1f} ({r['rss']:.1f} / {r['uss']:.1f})", "target": "PSS <= 17",
         "ok": m["pss"] <= TARGETS["pss_mib"]},
        {"figure": "  advertising (discovery on, the default)", "mesh": f"{a['pss']:.1f} ({a['rss']:.1f} / {a['uss']:.1f})",
         "raw pyzmq": "", "target": "PSS <= 17", "ok": a["pss"] <= TARGETS["pss_mib"]},
        {"figure": "  after 5 Msg replies", "mesh": f"{g['pss']:.1f} ({g['rss']:.1f} / {g['uss']:.1f})",
         "raw pyzmq": "", "target": "PSS <= 17", "ok": g["pss"] <= TARGETS["pss_mib"]},
        {"figure": "  first Msg reply (fresh server) ms", "mesh": f"{res['first_msg_reply_s'] * 1e3:.1f}",
         "raw pyzmq": "", "target": "", "ok": ""},
        {"figure": "  next Msg replies (median) ms", "mesh": f"{res['next_msg_reply_s'] * 1e3:.1f}",
         "raw pyzmq": "", "target": "", "ok": ""},
        {"figure": "zmq-agent-server start -> ready s", "mesh": f"{res['server_start_s']:.3f}", "raw pyzmq": "",
         "target": "", "ok": ""},
        {"figure": "  advertising (discovery on) start -> ready s", "mesh": f"{res['advertising_server_start_s']:.3f}",
         "raw pyzmq": "", "target": "", "ok": ""},
        {"figure": "child server launch() s", "mesh": f"{res['child_start_s']:.3f}", "raw pyzmq": "", "target": "< 0.1",
         "ok": res["child_start_s"] < TARGETS["child_start_s"]},
        {"figure": "init: 5 agents, running server, fresh process s", "mesh": f"{res['init_s']:.4f}", "raw pyzmq": "",
         "target": "<= 0.003", "ok": res["init_s"] <= TARGETS["init_s"]},
        {"figure": "  then one call each s", "mesh": f"{res['init_first_calls_s']:.4f}", "raw pyzmq": "", "target": "", "ok": ""},
        {"figure": "  import mesh s", "mesh": f"{res['import_s']:.3f}", "raw pyzmq": "", "target": "", "ok": ""},
    ]
    print(table(rows, ["figure", "mesh", "raw pyzmq", "target", "ok"]))
    write_json(args.json, {"benchmark": "footprint", **res})
    return 0


if __name__ == "__main__":
    sys.exit(main())
