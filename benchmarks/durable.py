"""Durable agents: what a checkpoint after every call costs, and how fast an agent comes back.

Latency: a sync call that changes the state, on a server in a subprocess, without a checkpoint,
with ``checkpoint=True`` on a directory store (temp file + fsync + rename + fsync of the folder) and
on a Redis store (a local redis-server, no persistence), for a ~1 KB state and for an agent with a
memory of 1,000 ``Msg``s (its ``state_dict()`` holds them all), one of which changes per call, or to
which one is added per call. Checkpoints are incremental (``mesh._core.ckpt_log``: a base, then
deltas); the directory store is measured with its default fsync and with ``?fsync=0``.
Raw pyzmq (a DEALER/ROUTER msgpack echo) is measured beside them in the same run.

Recovery: a server (subprocess) holding a checkpointed agent with ``max_restarts=1`` is killed
(SIGKILL) or frozen (SIGSTOP: what a partitioned host looks like: only the heartbeat timeout tells
it is gone); timed from the signal to the first call that succeeds on the restored agent, with a
3 s heartbeat timeout. The restart goes to this process's child server, running already.

    bin/isolated .venv/bin/python benchmarks/durable.py [--calls 300] [--reps 10] [--quick] [--json PATH]

Goal: recovery under 4 s (median of 10) with a 3 s heartbeat timeout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time

os.environ.setdefault("MESH_DISCOVERY", "0")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
from _common import median, percentile, table, write_json  # noqa: E402
from _durable_objects import GrowingMemory, Memory, SmallState  # noqa: E402
from _raw import RawClient, RawServer  # noqa: E402

import mesh  # noqa: E402
from mesh import _placement  # noqa: E402

GOAL = 4.0
HEARTBEAT = 3.0


def _time_calls(fn, calls: int) -> list[float]:
    for i in range(20):
        fn(i)
    out = []
    for i in range(calls):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def _folder_bytes(folder: str) -> int:
    try:
        return sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder) if n in ("ckpt",) or n.startswith("log."))
    except OSError:
        return 0


def latency(calls: int, store_dir: str, redis_url: str | None) -> list[dict]:
    rows = []
    raw = RawServer()
    try:
        client = RawClient(raw.address)
        lat = _time_calls(lambda i: client.echo(i), calls)
        rows.append({"state": "-", "store": "raw pyzmq echo", "median_ms": median(lat) * 1e3,
                     "p99_ms": percentile(lat, 99) * 1e3, "ckpt_bytes": 0})
        client.close()
    finally:
        raw.stop()
    stores = [("none", None), ("directory", store_dir), ("directory fsync=0", store_dir + "?fsync=0")]
    stores += [("redis", redis_url)] if redis_url else []
    servers = {name: mesh.AgentServer(port=0, advertise=False, state_store=url or store_dir).launch()
               for name, url in stores}
    try:
        for state, make, method in (("1 KB", lambda **o: SmallState(to_dist=o), "touch"),
                                    ("1,000 Msgs, one changed", lambda **o: Memory("m", 1000, to_dist=o), "touch"),
                                    ("1,000 Msgs, one added", lambda **o: GrowingMemory("m", 1000, to_dist=o), "add")):
            for name, _url in stores:
                srv = servers[name]
                options = {"host": srv.host, "port": srv.port}
                if name != "none":
                    options["checkpoint"] = True
                obj = make(**options)
                folder = os.path.join(store_dir, obj._mesh_id)
                lat = _time_calls(getattr(obj, method), calls)
                size = 0
                if name.startswith("directory"):  # what the store holds now, and what the calls wrote (appends)
                    size = _folder_bytes(folder)
                rows.append({"state": state, "store": name if name == "none" else f"checkpoint, {name}",
                             "median_ms": median(lat) * 1e3, "p99_ms": percentile(lat, 99) * 1e3, "ckpt_bytes": size})
                mesh.delete(obj)
    finally:
        for srv in servers.values():
            srv.shutdown()
    return rows


def recovery(reps: int, store_dir: str, how: str) -> list[float]:
    _placement.child_server(state_store=store_dir)  # the live server it goes to
    times = []
    for _ in range(reps):
        victim = mesh.AgentServer(port=0, advertise=False, state_store=store_dir, grace=0.5).launch()
        agent = SmallState(to_dist={"host": victim.host, "port": victim.port, "checkpoint": True, "max_restarts": 1})
        agent.touch(1)
        t0 = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL if how == "SIGKILL" else signal.SIGSTOP)
        while True:
            try:
                assert agent.calls == 1
                break
            except mesh.ServerUnavailable:
                if time.monotonic() - t0 > 30:
                    raise
        times.append(time.monotonic() - t0)
        if how != "SIGKILL":
            os.kill(victim.pid, signal.SIGKILL)
        victim._proc.wait(10)
        victim.shutdown()
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="fewer calls and 3 recoveries of each kind")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.quick:
        args.calls, args.reps = 50, 3
    mesh.init(heartbeat_timeout=HEARTBEAT)
    store_dir = tempfile.mkdtemp(prefix="mesh-durable-bench-", dir=os.path.expanduser("~"))  # a disk, not tmpfs
    redis = None
    try:
        from redis_server import RedisServer

        if RedisServer.binary:
            redis = RedisServer().start()
    except Exception as exc:  # noqa: BLE001
        print(f"no Redis store: {exc}")
    try:
        rows = latency(args.calls, store_dir, redis.url if redis else None)
        print(f"call latency, {args.calls} calls each (sync call that changes the state)")
        print(table(rows, ["state", "store", "median_ms", "p99_ms", "ckpt_bytes"]))
        print("(ckpt_bytes: the base and its deltas in the directory store after the calls)")
        rec = {how: recovery(args.reps, store_dir, how) for how in ("SIGKILL", "SIGSTOP")}
        rec_rows = [{"failure": how, "median_s": median(t), "max_s": max(t), "reps": len(t),
                     "goal_s": GOAL, "met": median(t) < GOAL} for how, t in rec.items()]
        print(f"\nrecovery: signal to the first successful call on the restored agent (heartbeat timeout {HEARTBEAT:g} s)")
        print(table(rec_rows, ["failure", "median_s", "max_s", "reps", "goal_s", "met"]))
        write_json(args.json, {"benchmark": "durable", "calls": args.calls, "latency": rows, "recovery": rec_rows,
                               "recovery_raw": rec})
    finally:
        mesh.shutdown()
        if redis is not None:
            redis.stop()
        shutil.rmtree(store_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
