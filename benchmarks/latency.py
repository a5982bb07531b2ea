"""Latency: sync round trip of a no-op method taking a small string, mesh vs raw pyzmq.

Mesh: ``obj.echo("hello")`` on an object of an agent server in a subprocess.
Raw: a DEALER/ROUTER + msgpack echo server in a subprocess (benchmarks/_raw.py).
Each repetition times N calls after a warm-up; mesh and raw repetitions alternate.
Reported: the median over repetitions of each repetition's median and p99.

A third row, "raw->mesh server", is a plain pyzmq DEALER speaking the mesh wire
protocol (transport/PROTOCOL.md) to the same mesh server: it splits the mesh's
overhead into the server's share (raw->mesh server minus raw) and the client's
share (mesh minus raw->mesh server).

``--pyro-python PATH`` adds Pyro5 in the same run: a Pyro5 echo server and client
(benchmarks/_pyro.py) run under that Python (a venv with Pyro5), the server in a
subprocess on 127.0.0.1, the client in a subprocess per repetition, after the others.

    bin/isolated .venv/bin/python benchmarks/latency.py [--calls 5000] [--reps 3] [--json PATH]
        [--wire-frames 1|3] [--pyro-python /work/bench-venv-pyro/bin/python]

Target: mesh median <= 1.2x raw median, and below Pyro5's (when measured).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("MESH_DISCOVERY", "0")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import cpu_seconds, median, percentile, table, write_json  # noqa: E402
from _objects import Echo  # noqa: E402
from _raw import RawClient, RawServer  # noqa: E402

import msgpack  # noqa: E402
import zmq  # noqa: E402

import mesh  # noqa: E402
from transport import SIGNATURE  # noqa: E402
from transport._framing import pack_one, split_one  # noqa: E402

TARGET = 1.2
PYRO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_pyro.py")


class PyroServer:
    """The Pyro5 echo server (benchmarks/_pyro.py serve) under another Python."""

    def __init__(self, python: str) -> None:
        self.python = python
        self.proc = subprocess.Popen([python, PYRO, "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()  # "uri URI pid PID"
        if len(line) != 4 or line[0] != "uri":
            self.stop()
            raise RuntimeError(f"the Pyro5 server did not start under {python}: {line}")
        self.uri, self.pid = line[1], int(line[3])

    def time_calls(self, n: int, warmup: int) -> tuple[list[float], dict]:
        out = subprocess.run([self.python, PYRO, "time", self.uri, str(self.pid), str(n), str(warmup)],
                             capture_output=True, text=True, timeout=600, check=True).stdout
        data = json.loads(out.strip().splitlines()[-1])
        return data["times"], {"client_cpu_us": data["client_cpu_us"], "server_cpu_us": data["server_cpu_us"]}

    def stop(self) -> None:
        try:
            self.proc.stdin.close()  # it exits when its stdin closes
            self.proc.wait(5)
        except Exception:
            self.proc.kill()
            self.proc.wait()


class MeshWireClient:
    """A bare DEALER that sends mesh ``call`` requests: the mesh server's cost without the mesh client's.

    As lean as a client of this protocol gets in Python (pyzmq's backend calls, as the mesh's
    transport makes them; msgpack per call; no mesh code): raw->mesh server minus raw is the
    server's share plus what the mesh's framing and header map cost any client, and mesh minus
    raw->mesh server is what the mesh client's own code costs. It sends one-frame requests, as the
    mesh client sends a plain sync call (``frames=3``: the three-frame layout).
    """

    def __init__(self, address: str, object_id: str, frames: int = 1) -> None:
        self.frames = frames  # requests in 1 frame (as the mesh client sends a plain sync call) or 3
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(address)
        self.object_id = object_id
        self.rid = 0

    def echo(self, s: str) -> str:
        self.rid += 1
        sock = self.sock
        header = {"op": "call", "obj": self.object_id, "m": "echo", "chain": "bench", "id": self.rid}
        body = msgpack.packb([[s], {}])
        if self.frames == 1:  # a one-frame request (PROTOCOL.md 1.5), as the mesh client sends it
            _send(sock, pack_one(msgpack.packb(header), body))
        else:
            _send(sock, SIGNATURE, _SNDMORE)
            _send(sock, msgpack.packb(header), _SNDMORE)
            _send(sock, body)
        first = _recv(sock, 0, True)  # the reply: one frame, or three (no buffers: an echo of a str)
        if first == SIGNATURE:
            head, value = _recv(sock, 0, True), _recv(sock, 0, True)
        else:
            head, value = split_one(first)
        reply = msgpack.unpackb(head)
        assert reply["re"] == self.rid and reply["op"] == "ok", reply
        return msgpack.unpackb(value)

    def close(self) -> None:
        self.sock.close(0)


_send = zmq.backend.Socket.send
_recv = zmq.backend.Socket.recv
_SNDMORE = int(zmq.SNDMORE)


def time_calls(fn, arg: str, n: int, cpu: dict | None = None, server_pid: int | None = None) -> list[float]:
    """Time ``n`` calls; ``cpu`` (if given) gets the CPU µs per call of this process and of ``server_pid``."""
    clock = time.perf_counter
    out = []
    append = out.append
    c0, s0 = cpu_seconds(), cpu_seconds(server_pid) if server_pid else 0.0
    for _ in range(n):
        t = clock()
        fn(arg)
        append(clock() - t)
    if cpu is not None:
        cpu["client_cpu_us"] = (cpu_seconds() - c0) / n * 1e6
        cpu["server_cpu_us"] = (cpu_seconds(server_pid) - s0) / n * 1e6 if server_pid else float("nan")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=5000, help="timed calls per repetition (default 5000)")
    ap.add_argument("--warmup", type=int, default=500, help="untimed calls before each repetition (default 500)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--wire-frames", type=int, choices=(1, 3), default=1,
                    help="the raw->mesh server client's requests: one frame, as the mesh client's (default), or three")
    ap.add_argument("--pyro-python", help="a Python with Pyro5 installed: measure a Pyro5 echo in the same run")
    args = ap.parse_args()
    mesh.init(discovery=False)
    pyro = PyroServer(args.pyro_python) if args.pyro_python else None

    server = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=True)
    raw_server = RawServer()
    raw = RawClient(raw_server.address)
    try:
        obj = Echo(to_dist={"host": server.host, "port": server.port})
        assert obj.echo("hello") == "hello"
        assert raw.echo("hello") == "hello"
        wire = MeshWireClient(server.address, obj._mesh_id, args.wire_frames)
        assert wire.echo("hello") == "hello"
        results: dict[str, list[dict]] = {"mesh": [], "raw": [], "raw->mesh server": []}
        if pyro is not None:
            results["pyro5"] = []
        for rep in range(args.reps):
            for name, fn, pid in (("mesh", obj.echo, server.pid), ("raw", raw.echo, raw_server.pid),
                                  ("raw->mesh server", wire.echo, server.pid)):
                time_calls(fn, "hello", args.warmup)
                cpu: dict = {}
                xs = time_calls(fn, "hello", args.calls, cpu, pid)
                results[name].append({"median_us": median(xs) * 1e6, "p99_us": percentile(xs, 99) * 1e6,
                                      "mean_us": sum(xs) / len(xs) * 1e6, **cpu})
                print(f"rep {rep + 1} {name}: median {results[name][-1]['median_us']:.1f} us, "
                      f"p99 {results[name][-1]['p99_us']:.1f} us, CPU per call: client {cpu['client_cpu_us']:.1f} us, "
                      f"server {cpu['server_cpu_us']:.1f} us", flush=True)
            if pyro is not None:
                xs, cpu = pyro.time_calls(args.calls, args.warmup)
                results["pyro5"].append({"median_us": median(xs) * 1e6, "p99_us": percentile(xs, 99) * 1e6,
                                         "mean_us": sum(xs) / len(xs) * 1e6, **cpu})
                print(f"rep {rep + 1} pyro5: median {results['pyro5'][-1]['median_us']:.1f} us, "
                      f"p99 {results['pyro5'][-1]['p99_us']:.1f} us, CPU per call: client {cpu['client_cpu_us']:.1f} us, "
                      f"server {cpu['server_cpu_us']:.1f} us", flush=True)
        wire.close()
    finally:
        if pyro is not None:
            pyro.stop()
        raw.close()
        raw_server.stop()
        server.shutdown()
        mesh.shutdown()

    summary = {}
    for name, reps in results.items():
        summary[name] = {k: median([r[k] for r in reps])
                         for k in ("median_us", "p99_us", "mean_us", "client_cpu_us", "server_cpu_us")}
    ratio = summary["mesh"]["median_us"] / summary["raw"]["median_us"]
    ratio_p99 = summary["mesh"]["p99_us"] / summary["raw"]["p99_us"]
    rows = [{"impl": name, **s} for name, s in summary.items()]
    server_share = summary["raw->mesh server"]["median_us"] - summary["raw"]["median_us"]
    client_share = summary["mesh"]["median_us"] - summary["raw->mesh server"]["median_us"]
    rows.append({"impl": "ratio mesh/raw", "median_us": ratio, "p99_us": ratio_p99,
                 "mean_us": summary["mesh"]["mean_us"] / summary["raw"]["mean_us"], "client_cpu_us": "", "server_cpu_us": ""})
    print()
    print(table(rows, ["impl", "median_us", "p99_us", "mean_us", "client_cpu_us", "server_cpu_us"]))
    ok = ratio <= TARGET
    print(f"\nmesh overhead over raw (medians): server side {server_share:.1f} us, client side {client_share:.1f} us")
    print(f"median ratio mesh/raw {ratio:.2f}x (target <= {TARGET}x): {'PASS' if ok else 'MISS'}")
    below_pyro = None
    if "pyro5" in summary:
        below_pyro = summary["mesh"]["median_us"] < summary["pyro5"]["median_us"]
        print(f"pyro5 median {summary['pyro5']['median_us']:.1f} us ({summary['pyro5']['median_us'] / summary['raw']['median_us']:.2f}x raw): "
              f"mesh {'below' if below_pyro else 'NOT below'} Pyro5")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    write_json(args.json, {
        "benchmark": "latency", "calls": args.calls, "wire_frames": args.wire_frames, "warmup": args.warmup, "reps": args.reps,
        "per_rep": results, "summary": summary, "ratio_median": ratio, "ratio_p99": ratio_p99,
        "server_overhead_us": server_share, "client_overhead_us": client_share,
        "target": f"median ratio <= {TARGET}", "pass": ok, "below_pyro5": below_pyro,
        "load": os.getloadavg(),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
