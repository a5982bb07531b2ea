"""Ray in ``peers.py``: every row of the peers' table with Ray actors on a local ``ray.init(num_cpus=2)``.

Runs under a Python with Ray (``benchmarks/peers_setup.sh``); imports nothing of the mesh.

    PY benchmarks/_peer_ray.py ROW [--agents N] [--calls N] [--mb X] [--reps N] [--sleep S]   (see _peer_base)

Child mode is ``ray.init(num_cpus=2)`` (it starts a local cluster: GCS, raylet, workers) then N actors and one
call each. "Running server" is a cluster started by ``ray.init`` in another process (a driver kept alive),
joined by a fresh process with ``ray.init(address=GCS)``: the connect plus N ``Actor.remote()`` are its init
(Ray creates actors asynchronously; the first calls are reported apart). The PSS is the sum over the
cluster's processes (every process below that driver, the driver itself not counted). Row "fanout" is n/a:
each Ray actor is a worker process of its own, so 200 actors are 200 Python processes (several GB), which a
shared 2-core machine cannot take.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _peer_base import Server, descendants, init_then_calls, main, median_ms, pss_mib, running_with, time_sync  # noqa: E402

ME = "_peer_ray.py"


def _actor(ray):  # noqa: ANN001, ANN202
    @ray.remote
    class Agent:
        def echo(self, s):  # noqa: ANN001, ANN202
            return s

        def work(self, i):  # noqa: ANN001, ANN202
            return i

        def nbytes(self, data):  # noqa: ANN001, ANN202
            return len(data)

        def reply(self, msg, sleep_s):  # noqa: ANN001, ANN202
            time.sleep(sleep_s)
            return msg

        def produce(self, n):  # noqa: ANN001, ANN202
            return b"\x01" * n

        def consume(self, data):  # noqa: ANN001, ANN202
            return len(data)

    return Agent


def _init():  # noqa: ANN202
    import ray
    ray.init(num_cpus=2, log_to_driver=False)
    return ray, _actor(ray)


def serve(args) -> None:  # noqa: ANN001
    ray, agent = _init()
    a = agent.remote()
    assert ray.get(a.echo.remote("hello")) == "hello"  # the cluster has served one call
    print("ready", ray.get_runtime_context().gcs_address, "pid", os.getpid(), flush=True)
    while os.read(0, 4096):  # until the parent closes our stdin: then the cluster goes down with us
        pass
    ray.shutdown()


def child(args) -> dict:  # noqa: ANN001
    import ray  # the import is not timed
    t0 = time.perf_counter()
    _, agent = _init()
    actors = [agent.remote() for _ in range(args.agents)]
    assert ray.get([a.echo.remote("hello") for a in actors]) == ["hello"] * args.agents
    t1 = time.perf_counter()
    ray.shutdown()
    return {"init_s": t1 - t0}


def client(args) -> dict:  # noqa: ANN001
    # a local cluster made by ray.init has token auth on (the token in ~/.ray/auth_token); a driver joining it
    # by address must be told so, or the GCS refuses it ("InvalidAuthToken", then "Failed to connect")
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray
    address, n = args.rest[1], int(args.rest[2])

    def make() -> list:
        ray.init(address=address, log_to_driver=False)
        agent = _actor(ray)
        return [agent.remote() for _ in range(n)]

    out = init_then_calls(make, lambda actors: ray.get([a.echo.remote("hello") for a in actors]))
    ray.shutdown()
    return out


def demo(args) -> dict:  # noqa: ANN001
    ray, agent = _init()
    actors = [agent.remote() for _ in range(args.agents)]
    ray.get([a.echo.remote("hello") for a in actors])
    t0 = time.perf_counter()
    got = ray.get([a.reply.remote("query", args.sleep) for a in actors])
    dt = time.perf_counter() - t0
    assert got == ["query"] * args.agents
    ray.shutdown()
    return {"seconds": dt}


def sync(args) -> dict:  # noqa: ANN001
    ray, agent = _init()
    a = agent.remote()
    out = time_sync(lambda: ray.get(a.echo.remote("hello")), args.calls, max(100, args.calls // 10))
    ray.shutdown()
    return out


def async_(args) -> dict:  # noqa: ANN001
    ray, agent = _init()
    actors = [agent.remote() for _ in range(4)]
    ray.get([a.echo.remote("hello") for a in actors])
    out = {}
    for key, group in (("one_per_s", actors[:1]), ("four_per_s", actors)):
        ray.get([group[i % len(group)].work.remote(i) for i in range(200)])  # warm
        t0 = time.perf_counter()
        got = ray.get([group[i % len(group)].work.remote(i) for i in range(args.calls)])
        out[key] = args.calls / (time.perf_counter() - t0)
        assert got == list(range(args.calls))
    ray.shutdown()
    return out


def bulk(args) -> dict:  # noqa: ANN001
    ray, agent = _init()
    a = agent.remote()
    data = b"\x01" * int(args.mb * 1e6)
    out = {"ms": median_ms(lambda: ray.get(a.nbytes.remote(data)), args.reps)}
    ray.shutdown()
    return out


def future(args) -> dict:  # noqa: ANN001
    ray, agent = _init()
    a, b = agent.remote(), agent.remote()
    n = int(args.mb * 1e6)

    def transfer() -> None:
        assert ray.get(b.consume.remote(a.produce.remote(n))) == n  # B gets the bytes from A's store

    out = {"ms": median_ms(transfer, args.reps)}
    ray.shutdown()
    return out


def pss(args) -> dict:  # noqa: ANN001
    with Server(ME) as s:
        pid = int(s.words[-1])
        time.sleep(0.5)
        return {"pss_mib": pss_mib([p for p in descendants(pid) if p != pid])}


if __name__ == "__main__":
    main({"serve": serve, "child": child, "running": running_with(ME, 0), "client": client, "demo": demo, "sync": sync,
          "async": async_, "bulk": bulk, "future": future, "pss": pss},
         {"fanout": "200 Ray actors are 200 worker processes (several GB): not run on a shared 2-core machine"})
