"""Bulk bytes: a 10 MB ``bytes`` argument to a remote method that returns its length; mesh vs raw pyzmq.

Mesh: ``obj.nbytes(data)`` (sync) on an object of an agent server in a subprocess.
Raw: the same bytes sent as one frame (zero-copy) on a DEALER to the raw server of
benchmarks/_raw.py, which replies with the length. Repetitions alternate mesh and raw.

    bin/isolated .venv/bin/python benchmarks/bulk_bytes.py [--mb 10] [--reps 30] [--json PATH]

Target: mesh median time within 1.5x raw. The minor page faults of each server per call (from
``/proc/PID/stat``) and the servers' RSS after the run are printed beside (see
``mesh.server._malloc``: a value received into fresh pages costs ~5 ms of faults per 10 MB).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("MESH_DISCOVERY", "0")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import median, table, write_json  # noqa: E402
from _objects import Echo  # noqa: E402
from _raw import RawClient, RawServer  # noqa: E402

import mesh  # noqa: E402

TARGET = 1.5


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=10, help="size of the argument in MB (10**6 bytes; default 10)")
    ap.add_argument("--reps", type=int, default=30, help="timed calls of each (default 30)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed calls of each first (default 10)")
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args()
    mesh.init(discovery=False)
    size = int(args.mb * 1e6)
    data = os.urandom(size)

    server = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=True)
    raw_server = RawServer()
    raw = RawClient(raw_server.address)
    times: dict[str, list[float]] = {"mesh": [], "raw": []}
    faults: dict[str, list[int]] = {"mesh": [], "raw": []}
    pids = {"mesh": server.pid, "raw": raw_server.pid}
    try:
        obj = Echo(to_dist={"host": server.host, "port": server.port})

        def mesh_call() -> int:
            return obj.nbytes(data)

        def raw_call() -> int:
            return raw.call("len", None, data)[0]

        for fn in (mesh_call, raw_call):  # warm-up
            for _ in range(args.warmup):
                assert fn() == size
        for _ in range(args.reps):
            for name, fn in (("mesh", mesh_call), ("raw", raw_call)):
                before = _minflt(pids[name])
                t = time.perf_counter()
                n = fn()
                times[name].append(time.perf_counter() - t)
                faults[name].append(_minflt(pids[name]) - before)
                assert n == size, (name, n)
        rss = {name: _rss_mib(pid) for name, pid in pids.items()}
    finally:
        raw.close()
        raw_server.stop()
        server.shutdown()
        mesh.shutdown()

    med = {k: median(v) for k, v in times.items()}
    ratio = med["mesh"] / med["raw"]
    rows = [{"impl": k, "median ms": med[k] * 1e3, "min ms": min(times[k]) * 1e3, "max ms": max(times[k]) * 1e3,
             "MB/s": size / med[k] / 1e6, "server faults/call": median(faults[k]), "server RSS MiB": rss[k]} for k in times]
    rows.append({"impl": "ratio mesh/raw", "median ms": ratio})
    print(table(rows, ["impl", "median ms", "min ms", "max ms", "MB/s", "server faults/call", "server RSS MiB"]))
    ok = ratio <= TARGET
    print(f"\n{size:,} bytes: mesh/raw {ratio:.2f}x (target <= {TARGET}x): {'PASS' if ok else 'MISS'}")
    write_json(args.json, {
        "benchmark": "bulk_bytes", "bytes": size, "reps": args.reps, "seconds": times, "median_s": med,
        "ratio": ratio, "target": f"ratio <= {TARGET}", "pass": ok, "server_minor_faults": faults, "server_rss_mib": rss,
    })
    return 0


def _minflt(pid: int) -> int:
    """Minor page faults of process ``pid`` so far (field 10 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[7])


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


if __name__ == "__main__":
    sys.exit(main())
