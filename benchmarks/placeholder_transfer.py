"""Placeholder transfer: a value produced on server S1, consumed on server S2, through a future.

Mesh: ``f = producer.produce(n)`` (``@async_func`` on S1, returns ``n`` bytes), then
``consumer.consume(f)`` (sync, on S2, returns ``len``): S2 fetches the value straight
from S1; the caller only passes the reference. Timed from issuing ``produce`` to
the length in hand. The bytes the caller's sockets received meanwhile are read
from ``mesh.client._client.get_client().node.received_bytes`` before and after.
The minor page faults of the producer and of the consumer per transfer (from
``/proc/PID/stat``) are reported beside: a value made in freshly mapped pages costs
~2 µs per 4 KiB page here (~5 ms per 10 MB) and more when the machine is loaded.

Raw: the same with raw pyzmq servers (benchmarks/_raw.py): the caller sends
``produce`` to raw S1 and ``consume`` to raw S2, which fetches the bytes from S1
on its own DEALER and replies with the length.

All four servers are subprocesses. Repetitions alternate mesh and raw.

    bin/isolated .venv/bin/python benchmarks/placeholder_transfer.py [--sizes 10,50] [--reps 10] [--json PATH]

Targets: mesh time <= 1.5x raw for each size; caller received < 1 KB per transfer.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

os.environ.setdefault("MESH_DISCOVERY", "0")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import median, table, write_json  # noqa: E402
from _objects import Consumer, Producer  # noqa: E402
from _raw import RawClient, RawServer  # noqa: E402

import msgpack  # noqa: E402

import mesh  # noqa: E402
from mesh.client import _client  # noqa: E402

TARGET_RATIO = 1.5
TARGET_BYTES = 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,50", help="value sizes in MB (10**6 bytes), comma-separated (default 10,50)")
    ap.add_argument("--reps", type=int, default=10, help="timed transfers per size and implementation (default 10)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed transfers first (default 3)")
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args()
    sizes = [int(float(s) * 1e6) for s in args.sizes.split(",")]
    biggest = max(sizes)
    mesh.init(discovery=False)

    limit = max(32 * 2**20, 2 * biggest)
    s1 = mesh.AgentServer(port=0, advertise=False, max_message_size=limit).launch(in_subprocess=True)
    s2 = mesh.AgentServer(port=0, advertise=False, max_message_size=limit).launch(in_subprocess=True)
    r1, r2 = RawServer(), RawServer()
    raw1, raw2 = RawClient(r1.address), RawClient(r2.address)
    node = _client.get_client().node
    results: dict[int, dict[str, list]] = {}
    try:
        producer = Producer(to_dist={"host": s1.host, "port": s1.port})
        consumer = Consumer(to_dist={"host": s2.host, "port": s2.port})
        key = [0]

        errors: list[str] = []
        attempts = [0]

        faults: dict[str, list[int]] = {"mesh_S1": [], "mesh_S2": [], "raw_S1": [], "raw_S2": []}

        def counted(name: str, pids: tuple[int, int], once: Any, n: int) -> tuple[float, int]:
            before = [_minflt(p) for p in pids]
            out = once(n)
            for side, pid, b in zip(("S1", "S2"), pids, before, strict=True):
                faults[f"{name}_{side}"].append(_minflt(pid) - b)
            return out

        def mesh_once(n: int) -> tuple[float, int]:
            for _ in range(5):
                attempts[0] += 1
                before = node.received_bytes
                t = time.perf_counter()
                f = producer.produce(n)
                try:
                    got = consumer.consume(f)
                except mesh.RemoteError as exc:
                    # S2's fetch can reach S1 before the produce request does; S1 then answers
                    # "expired" (a mesh bug, see RESULTS.md). Counted, and the transfer is retried.
                    errors.append(f"{exc.remote_type}: {str(exc).splitlines()[0][:200]}")
                    print(f"  error (retrying): {errors[-1]}", flush=True)
                    continue
                elapsed = time.perf_counter() - t
                assert got == n, (got, n)
                return elapsed, node.received_bytes - before
            raise RuntimeError("5 transfers in a row failed")

        def raw_once(n: int) -> tuple[float, int]:
            key[0] += 1
            t = time.perf_counter()
            # produce and consume go out at once, as in the mesh; S1 answers S2's get when the value exists
            raw1.sock.send(msgpack.packb([10**9 + key[0], "produce", [key[0], n]]))
            got, _ = raw2.call("consume", [r1.address, key[0]])
            raw1.sock.recv_multipart()  # produce's ack
            elapsed = time.perf_counter() - t
            assert got == n, (got, n)
            return elapsed, 0

        for n in sizes:
            for _ in range(args.warmup):
                mesh_once(n)
                raw_once(n)
            res = results[n] = {"mesh_s": [], "raw_s": [], "caller_received_bytes": []}
            for values in faults.values():
                values.clear()
            for _ in range(args.reps):
                dt, received = counted("mesh", (s1.pid, s2.pid), mesh_once, n)
                res["mesh_s"].append(dt)
                res["caller_received_bytes"].append(received)
                res["raw_s"].append(counted("raw", (r1.pid, r2.pid), raw_once, n)[0])
            res["minor_faults"] = {k: list(v) for k, v in faults.items()}
            print(f"{n:,} bytes: mesh {median(res['mesh_s']) * 1e3:.1f} ms, raw {median(res['raw_s']) * 1e3:.1f} ms, "
                  f"caller received {max(res['caller_received_bytes'])} B; minor faults per transfer (median) "
                  + ", ".join(f"{k} {median(v):.0f}" for k, v in faults.items()), flush=True)
        rss = {"S1": _rss_mib(s1.pid), "S2": _rss_mib(s2.pid), "raw_S1": _rss_mib(r1.pid), "raw_S2": _rss_mib(r2.pid),
               "S1_peak": _rss_mib(s1.pid, "VmHWM:"), "raw_S1_peak": _rss_mib(r1.pid, "VmHWM:")}
    finally:
        raw1.close()
        raw2.close()
        r1.stop()
        r2.stop()
        s1.shutdown()
        s2.shutdown()
        mesh.shutdown()

    rows = []
    summary = {}
    ok = True
    for n, res in results.items():
        m, r = median(res["mesh_s"]), median(res["raw_s"])
        recv = median(res["caller_received_bytes"])
        passed = m / r <= TARGET_RATIO and max(res["caller_received_bytes"]) < TARGET_BYTES
        ok = ok and passed
        flt = {k: median(v) for k, v in res["minor_faults"].items()}
        summary[str(n)] = {"mesh_s": m, "raw_s": r, "ratio": m / r, "caller_received_bytes_median": recv,
                           "minor_faults_median": flt, "mesh_s_max": max(res["mesh_s"]), "raw_s_max": max(res["raw_s"]),
                           "caller_received_bytes_max": max(res["caller_received_bytes"]), "pass": passed}
        rows.append({"bytes": f"{n:,}", "mesh ms": m * 1e3, "raw ms": r * 1e3, "ratio": m / r,
                     "mesh MB/s": n / m / 1e6, "caller rx B (max)": max(res["caller_received_bytes"]),
                     "faults S1/S2 mesh": f"{flt['mesh_S1']:.0f}/{flt['mesh_S2']:.0f}",
                     "faults S1/S2 raw": f"{flt['raw_S1']:.0f}/{flt['raw_S2']:.0f}",
                     "pass": "PASS" if passed else "MISS"})
    print()
    print(table(rows, ["bytes", "mesh ms", "raw ms", "ratio", "mesh MB/s", "caller rx B (max)", "faults S1/S2 mesh",
                       "faults S1/S2 raw", "pass"]))
    print(f"\nservers' RSS after the run: S1 (producer) {rss['S1']:.0f} MiB, S2 (consumer) {rss['S2']:.0f} MiB "
          f"(raw {rss['raw_S1']:.0f} / {rss['raw_S2']:.0f} MiB); S1's peak {rss['S1_peak']:.0f} MiB (raw {rss['raw_S1_peak']:.0f})")
    print(f"failed transfers (retried): {len(errors)} of {attempts[0]} mesh transfers (warm-up included)")
    print(f"targets: ratio <= {TARGET_RATIO}x, caller received < {TARGET_BYTES} B: {'PASS' if ok else 'MISS'}")
    write_json(args.json, {
        "benchmark": "placeholder_transfer", "reps": args.reps, "per_rep": {str(k): v for k, v in results.items()},
        "summary": summary, "server_rss_mib": rss, "errors": errors, "mesh_attempts": attempts[0], "target": f"ratio <= {TARGET_RATIO} and caller received < {TARGET_BYTES} B", "pass": ok,
    })
    return 0


def _minflt(pid: int) -> int:
    """Minor page faults of process ``pid`` so far (field 10 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[7])


def _rss_mib(pid: int, field: str = "VmRSS:") -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return 0.0


if __name__ == "__main__":
    sys.exit(main())
