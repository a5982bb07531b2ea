"""Token streams: 10,000 items of 16 bytes from one generator to one reader, against raw pyzmq PUSH/PULL.

Mesh: a ``@stream_func`` generator on server P (a subprocess) yields ``n`` items of 16 bytes
(``struct.pack("<Qq", index, time.monotonic_ns())``: the stamp of when it was yielded; the
monotonic clock is one clock for every process of this machine). Read by

* the caller (this process): ``for item in stream``;
* a second agent on server Q (another subprocess) that the stream was passed to: it subscribes
  to P itself, and reports its own figures.

The generator first waits ``--start-delay`` s so that the reader is subscribed when the first
item is yielded. Time to first item: from its yield (its stamp) to its read. Items/s: items
after the first over the time from reading the first to reading the last.

Raw: a PUSH socket in a subprocess sends the same items (same stamps) to a PULL socket in this
process, after the same delay. Repetitions alternate mesh, passed, raw.

    bin/isolated .venv/bin/python benchmarks/streams.py [--items 10000] [--reps 5] [--json PATH]

Targets: mesh items/s within 2x of raw (ratio raw/mesh <= 2); first item within 2 ms.
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import time

os.environ.setdefault("MESH_DISCOVERY", "0")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import median, table, write_json  # noqa: E402

import zmq  # noqa: E402

import mesh  # noqa: E402
from mesh import RpcMeta, stream_func  # noqa: E402

TARGET_RATIO = 2.0
TARGET_FIRST_MS = 2.0
_ITEM = struct.Struct("<Qq")


class TokenSource(metaclass=RpcMeta):
    @stream_func
    def tokens(self, n: int, start_delay: float):
        import struct as _struct
        import time as _time

        pack, stamp = _struct.Struct("<Qq").pack, _time.monotonic_ns
        _time.sleep(start_delay)
        for i in range(n):
            yield pack(i, stamp())


class TokenReader(metaclass=RpcMeta):
    def read(self, stream) -> dict:
        import struct as _struct
        import time as _time

        unpack, now = _struct.Struct("<Qq").unpack, _time.monotonic_ns
        count = 0
        first = last = first_lag = 0
        for item in stream:
            t = now()
            if count == 0:
                first, first_lag = t, t - unpack(item)[1]
            last = t
            count += 1
        return {"count": count, "first_ms": first_lag / 1e6, "items_per_s": (count - 1) / max(1e-9, (last - first) / 1e9)}


def read_here(items) -> dict:
    now = time.monotonic_ns
    count = 0
    first = last = first_lag = 0
    for item in items:
        t = now()
        if count == 0:
            first, first_lag = t, t - _ITEM.unpack(item)[1]
        last = t
        count += 1
    return {"count": count, "first_ms": first_lag / 1e6, "items_per_s": (count - 1) / max(1e-9, (last - first) / 1e9)}


_RAW_PUSH = """
import struct, sys, time, zmq
ctx = zmq.Context(); s = ctx.socket(zmq.PUSH); s.sndhwm = 0; s.connect(sys.argv[1])
n, delay = int(sys.argv[2]), float(sys.argv[3])
pack, stamp = struct.Struct("<Qq").pack, time.monotonic_ns
time.sleep(delay)
for i in range(n):
    s.send(pack(i, stamp()))
s.send(b"")
s.close(linger=5000); ctx.term()
"""


def raw_once(n: int, delay: float) -> dict:
    ctx = zmq.Context.instance()
    pull = ctx.socket(zmq.PULL)
    pull.rcvhwm = 0
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-c", _RAW_PUSH, f"tcp://127.0.0.1:{port}", str(n), str(delay)])

    def items():
        while True:
            msg = pull.recv()
            if not msg:
                return
            yield msg

    try:
        return read_here(items())
    finally:
        proc.wait(30)
        pull.close(0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--start-delay", type=float, default=0.3, help="s the generator waits before its first item")
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args()
    load_before = os.getloadavg()
    mesh.init(discovery=False)
    p = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=True)
    q = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=True)
    runs: dict[str, list[dict]] = {"mesh": [], "passed": [], "raw": []}
    try:
        src = TokenSource(to_dist={"host": p.host, "port": p.port})
        reader = TokenReader(to_dist={"host": q.host, "port": q.port})
        n, delay = args.items, args.start_delay
        read_here(src.tokens(200, 0.0))  # warm-up: connections, class transfer
        reader.read(src.tokens(200, 0.0))
        raw_once(200, 0.05)
        for rep in range(args.reps):
            got = read_here(src.tokens(n, delay))
            assert got["count"] == n, got
            runs["mesh"].append(got)
            got = reader.read(src.tokens(n, delay))
            assert got["count"] == n, got
            runs["passed"].append(got)
            got = raw_once(n, delay)
            assert got["count"] == n, got
            runs["raw"].append(got)
            print(f"rep {rep + 1}: " + ", ".join(
                f"{k} {v[-1]['items_per_s']:,.0f}/s first {v[-1]['first_ms']:.2f} ms" for k, v in runs.items()), flush=True)
    finally:
        p.shutdown()
        q.shutdown()
        mesh.shutdown()

    raw_rate = median([r["items_per_s"] for r in runs["raw"]])
    rows, summary, ok = [], {}, True
    for name, label in (("mesh", "mesh, the caller reads"), ("passed", "mesh, passed to an agent on Q"), ("raw", "raw pyzmq PUSH/PULL")):
        rate = median([r["items_per_s"] for r in runs[name]])
        first = median([r["first_ms"] for r in runs[name]])
        ratio = raw_rate / rate
        passed = name == "raw" or (ratio <= TARGET_RATIO and first <= TARGET_FIRST_MS)
        ok = ok and passed
        summary[name] = {"items_per_s": rate, "first_item_ms": first, "raw_over_this": ratio, "pass": passed}
        rows.append({"reader": label, "items/s": rate, "first item ms": first, "raw/this": ratio,
                     "pass": "" if name == "raw" else ("PASS" if passed else "MISS")})
    print()
    print(table(rows, ["reader", "items/s", "first item ms", "raw/this", "pass"]))
    load = {"before": load_before, "after": os.getloadavg(), "cpus": os.cpu_count()}
    print(f"\n{args.items:,} items of 16 bytes, median of {args.reps} runs; targets: raw/mesh <= {TARGET_RATIO}, "
          f"first item <= {TARGET_FIRST_MS} ms: {'PASS' if ok else 'MISS'}")
    print(f"machine: {load['cpus']} CPUs, load average (1, 5, 15 min) before {load_before[0]:.1f} {load_before[1]:.1f} "
          f"{load_before[2]:.1f}, after {load['after'][0]:.1f} {load['after'][1]:.1f} {load['after'][2]:.1f}")
    write_json(args.json, {
        "benchmark": "streams", "load": load, "items": args.items, "item_bytes": 16, "reps": args.reps, "runs": runs,
        "summary": summary, "target": f"raw/mesh <= {TARGET_RATIO} and first item <= {TARGET_FIRST_MS} ms", "pass": ok,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
