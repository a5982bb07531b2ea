"""What a checkpoint writes and costs, full snapshot against incremental (base + deltas), same run.

No server: the stages of one checkpoint (``state_dict()``, pickle, write) for a 1 KB state and a
memory of 1,000 ``Msg``s to which one is added per call (or one of which changes per call), on a
directory store (default fsync and ``fsync=0``) and on a local Redis when one is installed.
"full" is the previous scheme (the whole sealed pickle every call, ``put_fenced``); "incremental"
is :class:`mesh._core.ckpt_log.Chain`.

    .venv/bin/python benchmarks/durable_delta.py [--calls 200] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import cloudpickle

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
from _common import median, table, write_json  # noqa: E402

import mesh  # noqa: E402
from mesh._core.ckpt_log import BASE, Chain  # noqa: E402
from mesh._core.state_store import DirectoryStore, seal  # noqa: E402
from mesh.server._checkpoint import take_state  # noqa: E402


class _Agent(mesh.AgentBase):
    pass


def _states():
    small = {"blob": "x" * 1000, "calls": 0}

    def small_step(i):
        small["calls"] = i
        return small

    agent = _Agent.__new__(_Agent)
    agent.name, agent.memory = "m", [mesh.Msg("user", f"message {i} " + "y" * 40) for i in range(1000)]

    def add(i):
        agent.memory.append(mesh.Msg("user", f"message {i} " + "y" * 40))
        return agent

    other = _Agent.__new__(_Agent)
    other.name, other.memory = "m", [mesh.Msg("user", f"message {i} " + "y" * 40) for i in range(1000)]

    def change(i):
        other.memory[(i * 7) % 1000].metadata = {"seen": i}
        return other

    return [("1 KB", small_step), ("1,000 Msgs, one added", add), ("1,000 Msgs, one changed", change)]


def run(store, scheme: str, step, calls: int) -> dict:
    chain, version, oid = Chain(), -1, "bench-" + os.urandom(4).hex()
    t_state = t_pickle = t_write = 0.0
    written = 0
    lat = []
    for i in range(calls):
        obj = step(i)
        t0 = time.perf_counter()
        state = take_state(obj) if not isinstance(obj, dict) else obj
        t1 = time.perf_counter()
        data = cloudpickle.dumps(state, protocol=5)
        t2 = time.perf_counter()
        if scheme == "full":
            blob = seal(store.key, "checkpoint", oid, BASE.pack(version + 1, 0) + data)
            store.put_fenced(oid, "ckpt", blob, 0)
            version, n = version + 1, len(blob)
        else:
            _, version, n = chain.write(store, oid, 0, version, data)
        t3 = time.perf_counter()
        t_state, t_pickle, t_write, written = t_state + t1 - t0, t_pickle + t2 - t1, t_write + t3 - t2, written + n
        lat.append(t3 - t0)
    store.drop(oid)
    return {"state_ms": t_state / calls * 1e3, "pickle_ms": t_pickle / calls * 1e3, "write_ms": t_write / calls * 1e3,
            "median_ms": median(lat) * 1e3, "bytes_per_call": written // calls}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--json")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="mesh-delta-bench-", dir=os.path.expanduser("~"))  # a disk, not tmpfs
    stores = [("directory", DirectoryStore(os.path.join(root, "a"))),
              ("directory fsync=0", DirectoryStore(os.path.join(root, "b"), fsync=False))]
    redis = None
    try:
        from redis_server import RedisServer

        if RedisServer.binary:
            from mesh._core._state_redis import RedisStore

            redis = RedisServer().start()
            stores.append(("redis", RedisStore(redis.url)))
    except Exception as exc:  # noqa: BLE001
        print(f"no Redis store: {exc}")
    rows = []
    try:
        for label, step in _states():
            for name, store in stores:
                for scheme in ("full", "incremental"):
                    rows.append({"state": label, "store": name, "scheme": scheme, **run(store, scheme, step, args.calls)})
    finally:
        if redis is not None:
            redis.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"one checkpoint, {args.calls} calls each (mean per call; median_ms: the whole checkpoint)")
    print(table(rows, ["state", "store", "scheme", "state_ms", "pickle_ms", "write_ms", "median_ms", "bytes_per_call"]))
    write_json(args.json, {"benchmark": "durable_delta", "calls": args.calls, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
