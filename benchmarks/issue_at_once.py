"""Issue everything at once: N async calls issued in one loop, then gathered; errors counted.

Optionally the objects first hold their servers' GIL for ``--busy`` seconds (a CPU-busy
server with many calls queued on one connection), and a second round checks that the
objects still exist (their leases were renewed while the calls queued; ``--lease-ttl``).
Run inside ``bin/isolated``.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("MESH_DISCOVERY", "0")

import mesh  # noqa: E402


class Spin(metaclass=mesh.RpcMeta):
    @mesh.async_func
    def work(self, secs: float = 0.0) -> int:
        end = time.time() + secs
        n = 0
        while time.time() < end:
            n += 1
        return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--servers", type=int, default=1)
    ap.add_argument("--objects", type=int, default=4, help="objects per server")
    ap.add_argument("--busy", type=float, default=0.0, help="seconds each object spins first")
    ap.add_argument("--lease-ttl", type=float, default=30.0)
    ap.add_argument("--heartbeat", type=float, default=None, help="MESH_HEARTBEAT_TIMEOUT for all")
    args = ap.parse_args()
    if args.heartbeat:
        os.environ["MESH_HEARTBEAT_TIMEOUT"] = str(args.heartbeat)
        mesh.init(heartbeat_timeout=args.heartbeat)
    servers = [
        mesh.AgentServer(port=0, advertise=False, lease_ttl=args.lease_ttl).launch(in_subprocess=True)
        for _ in range(args.servers)
    ]
    try:
        objs = [Spin(to_dist={"host": s.host, "port": s.port}) for s in servers for _ in range(args.objects)]
        t = time.perf_counter()
        futs = [o.work(args.busy) for o in objs] if args.busy else []
        futs += [objs[i % len(objs)].work() for i in range(args.calls)]
        issued = time.perf_counter() - t
        errors: collections.Counter = collections.Counter()
        first: dict[str, str] = {}
        for f in futs:
            try:
                f.result(timeout=300)
            except mesh.MeshError as exc:
                errors[type(exc).__name__] += 1
                first.setdefault(type(exc).__name__, str(exc)[:120])
        total = time.perf_counter() - t
        second: collections.Counter = collections.Counter()
        for o in objs:  # do the objects still exist?
            try:
                o.work().result(timeout=60)
                second["ok"] += 1
            except mesh.MeshError as exc:
                second[type(exc).__name__] += 1
        print(
            f"calls={args.calls} servers={args.servers} objects={len(objs)} busy={args.busy}s "
            f"issued in {issued:.2f}s, gathered in {total:.2f}s, errors={sum(errors.values())} {dict(errors)} "
            f"second round {dict(second)} {first}"
        )
    finally:
        for s in servers:
            s.shutdown()


if __name__ == "__main__":
    main()
