"""Instructions per sync call (callgrind), per thread: the client's side or the server's, deterministic.

The side measured runs under ``valgrind --tool=callgrind --separate-threads=yes`` twice, with 0 and
with N calls after 300 warm-up calls; the difference per call is printed for each thread (thread 01
is the main one: the client's calling thread; on the server side the I/O thread is the next one,
the libzmq I/O thread after it). The other side runs normally, in its own process.

- ``--side client``: a client process under valgrind (``--mode mesh``: an ``Echo`` proxy's
  ``echo("hello")``; ``wire``: latency.py's bare DEALER of the mesh protocol; ``raw``: the raw pyzmq
  client against benchmarks/_raw.py) calling a mesh server in a subprocess.
- ``--side server``: an in-process mesh server under valgrind, called by a mesh (or wire) client
  here. ``MESH_INLINE_US=1000000``: under valgrind every call runs ~50x slower, and without it none
  would run inline (the fast lanes would not be measured).

    bin/isolated .venv/bin/python benchmarks/sync_instructions.py --side client --mode mesh [--calls 2000]
    bin/isolated .venv/bin/python benchmarks/sync_instructions.py --side server --mode mesh

Needs valgrind. Under load the counts move by a few hundred instructions (a timer's tick, a
watchdog's), not by thousands: run base and new in the same minutes.
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("MESH_DISCOVERY", "0")
os.environ.setdefault("MESH_INLINE_US", "1000000")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT  # noqa: E402

HERE = os.path.abspath(__file__)
VALGRIND = ["valgrind", "--tool=callgrind", "--separate-threads=yes", "--dump-instr=no"]


def _client(mode: str, address: str, object_id: str, n: int) -> None:
    """The calling process (``--side client``): warm up, wait for a line, make ``n`` calls, wait again."""
    if mode == "raw":
        from _raw import RawClient

        fn = RawClient(address).echo
    elif mode == "wire":
        from latency import MeshWireClient

        fn = MeshWireClient(address, object_id).echo
    else:
        import mesh
        from mesh.client._proxy import RpcObject

        mesh.init(discovery=False)
        fn = RpcObject(address, object_id, "Echo", {"echo": "sync"}).echo
    for _ in range(300):
        fn("hello")
    print("ready", flush=True)
    sys.stdin.readline()
    for _ in range(n):
        fn("hello")
    print("done", flush=True)
    sys.stdin.readline()
    os._exit(0)


def _serve() -> None:
    """An in-process mesh server (``--side server``): serves until a line on stdin."""
    import mesh

    mesh.init(discovery=False)
    server = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=False)
    print(f"port {server.port}", flush=True)
    sys.stdin.readline()
    os._exit(0)


def _totals(prefix: str) -> dict[str, int]:
    out = {}
    for path in glob.glob(prefix + "-*"):
        with open(path) as f:
            for line in f:
                if line.startswith(("summary:", "totals:")):
                    out[path.rsplit("-", 1)[1]] = int(line.split()[1])
                    break
    return out


def _run(side: str, mode: str, n: int, out: str) -> dict[str, int]:
    import mesh
    from _objects import Echo
    from _raw import RawServer
    from latency import MeshWireClient

    args = [*VALGRIND, f"--callgrind-out-file={out}", sys.executable, HERE]
    if side == "client":
        server = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=True)
        raw = RawServer() if mode == "raw" else None
        try:
            obj = Echo(to_dist={"host": server.host, "port": server.port})
            address = raw.address if raw else server.address
            p = subprocess.Popen(
                [*args, "_client", mode, address, obj._mesh_id, str(n)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            assert p.stdout.readline().strip() == "ready"
            p.stdin.write("\n")
            p.stdin.flush()
            assert p.stdout.readline().strip() == "done"
            p.stdin.write("\n")
            p.stdin.flush()
            p.wait(600)
        finally:
            if raw:
                raw.stop()
            server.shutdown()
    else:
        p = subprocess.Popen(
            [*args, "_serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
        port = int(p.stdout.readline().split()[1])
        obj = Echo(to_dist={"host": "127.0.0.1", "port": port})
        fn = obj.echo if mode == "mesh" else MeshWireClient(f"tcp://127.0.0.1:{port}", obj._mesh_id).echo
        for _ in range(300 + n):
            fn("hello")
        p.stdin.write("\n")
        p.stdin.flush()
        p.wait(600)
    return _totals(out)


def main() -> int:
    if sys.argv[1:2] == ["_client"]:
        _client(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    if sys.argv[1:2] == ["_serve"]:
        _serve()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", choices=("client", "server"), required=True)
    ap.add_argument("--mode", choices=("mesh", "wire", "raw"), default="mesh")
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    if args.side == "server" and args.mode == "raw":
        ap.error("--side server measures the mesh server: --mode mesh or wire")
    import mesh

    mesh.init(discovery=False)
    with tempfile.TemporaryDirectory() as tmp:
        base = _run(args.side, args.mode, 0, os.path.join(tmp, "zero.out"))
        more = _run(args.side, args.mode, args.calls, os.path.join(tmp, "n.out"))
    for thread in sorted(set(base) | set(more)):
        per_call = (more.get(thread, 0) - base.get(thread, 0)) / args.calls
        if abs(per_call) >= 50:
            print(f"{args.side} ({args.mode}) thread {thread}: {per_call:,.0f} instructions per call")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    mesh.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
