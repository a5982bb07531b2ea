"""AutoGen's distributed runtime, mesh vs gRPC: publish throughput (2 -> 4 workers) and send_message RTT.

Each runtime runs as AutoGen's tutorial deploys it: the host and every worker in its own process.
Worker 1 publishes; ten subscriber agents (types ``sub0``..``sub9``, each with a ``TypeSubscription``
to topic type ``bench``) are spread round-robin over workers 2..N, so every event crosses from one
worker to another. Timed: from the first of N publishes of a small dataclass until every subscriber
worker has handled its ``N * subscribers_there`` deliveries (delivered events/s; clocks are
CLOCK_MONOTONIC, shared by the processes). Then ``--rtt`` sequential ``send_message`` calls from
worker 1 to ``sub0`` on worker 2 (median and p90 round trip).

    bin/isolated .venv/bin/python benchmarks/autogen_publish.py --grpc-python .bench-venv/bin/python \\
        --json benchmarks/results/autogen_publish.json
    (the gRPC runtime: python -m venv .bench-venv && .bench-venv/bin/pip install "autogen-ext[grpc]";
     without --grpc-python only the mesh runs)

Options: ``--workers 2,4 --publishes 10000 --subscribers 10 --rtt 1000 --runtimes mesh,grpc``.
The script imports only autogen-core (and the runtime it drives), so the gRPC side needs no mesh.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]  # benchmarks/discovery.py is not discovery


from autogen_core import (  # noqa: E402
    AgentId,
    MessageContext,
    RoutedAgent,
    TopicId,
    TypeSubscription,
    message_handler,
    try_get_known_serializers_for_type,
)


# ------------------------------------------------------------------ the worker processes
@dataclass
class Tick:
    n: int


@dataclass
class Echo:
    n: int


class Count:
    expect = 0
    got = 0
    done: asyncio.Event | None = None


class Sub(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("counts ticks")

    @message_handler
    async def on_tick(self, message: Tick, ctx: MessageContext) -> None:
        Count.got += 1
        if Count.got >= Count.expect and Count.done is not None:
            Count.done.set()

    @message_handler
    async def on_echo(self, message: Echo, ctx: MessageContext) -> Echo:
        return message


def say(**kw) -> None:
    print(json.dumps(kw), flush=True)


def runtimes(kind: str):
    if kind == "grpc":
        from autogen_ext.runtimes.grpc import GrpcWorkerAgentRuntime, GrpcWorkerAgentRuntimeHost

        return GrpcWorkerAgentRuntimeHost, GrpcWorkerAgentRuntime
    sys.path.insert(0, ROOT)
    from mesh.autogen import MeshWorkerRuntime, MeshWorkerRuntimeHost

    return MeshWorkerRuntimeHost, MeshWorkerRuntime


async def host_main(kind: str, address: str) -> None:
    Host, _ = runtimes(kind)
    host = Host(address=address)
    host.start()
    say(ready=address)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the coordinator closes stdin
    await host.stop()


async def worker_main(kind: str, address: str, subs: list[str]) -> None:
    _, Worker = runtimes(kind)
    w = Worker(host_address=address)
    await w.start()
    for t in (Tick, Echo):
        w.add_message_serializer(try_get_known_serializers_for_type(t))
    for name in subs:
        await Sub.register(w, name, Sub, skip_class_subscriptions=True)
        await w.add_subscription(TypeSubscription("bench", name))
    say(ready=subs)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        cmd, *arg = line.split()
        if cmd == "expect":  # count deliveries from now; say when there are int(arg) of them
            Count.got, Count.expect, Count.done = 0, int(arg[0]), asyncio.Event()

            async def report(done: asyncio.Event = Count.done) -> None:
                await done.wait()
                say(done=time.perf_counter(), got=Count.got)

            loop.create_task(report())
            say(expecting=Count.expect)
        elif cmd == "publish":
            t0 = time.perf_counter()
            for i in range(int(arg[0])):
                await w.publish_message(Tick(i), TopicId("bench", "s"))
            say(t0=t0, issued=time.perf_counter() - t0)
        elif cmd == "rtt":
            rtts = []
            target = AgentId("sub0", "s")
            for i in range(int(arg[0]) + 50):
                t = time.perf_counter()
                await w.send_message(Echo(i), target)
                rtts.append(time.perf_counter() - t)
            rtts = rtts[50:]  # warm-up
            say(rtt_median_ms=statistics.median(rtts) * 1000, rtt_p90_ms=sorted(rtts)[int(0.9 * len(rtts))] * 1000)
    await w.stop()


# ------------------------------------------------------------------ the coordinator
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    def __init__(self, python: str, args: list[str]) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.setdefault("MESH_DISCOVERY", "0")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT if "mesh" in args else "", env.get("PYTHONPATH", "")) if p)
        self.p = subprocess.Popen([python, os.path.abspath(__file__), *args], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env=env)
        self.lines: list[dict] = []
        self.cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.p.stdout:
            if line.startswith("{"):
                with self.cv:
                    self.lines.append(json.loads(line))
                    self.cv.notify_all()
        with self.cv:
            self.lines.append({"eof": True})
            self.cv.notify_all()

    def ask(self, cmd: str) -> None:
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()

    def wait(self, key: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                for i, d in enumerate(self.lines):
                    if key in d:
                        return self.lines.pop(i)
                    if "eof" in d:
                        raise RuntimeError(f"worker exited (rc {self.p.poll()}) before {key!r}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {key!r} within {timeout} s")
                self.cv.wait(left)

    def close(self) -> None:
        try:
            self.p.stdin.close()
            self.p.wait(20)
        except Exception:
            self.p.kill()
            self.p.wait(5)


def run_one(kind: str, python: str, workers: int, publishes: int, subscribers: int, rtt: int) -> dict:
    address = f"127.0.0.1:{free_port()}"
    procs: list[Proc] = []
    try:
        host = Proc(python, ["--role", "host", "--runtime", kind, "--address", address])
        procs.append(host)
        host.wait("ready", 60)
        holders = workers - 1
        plan = [[f"sub{i}" for i in range(subscribers) if i % holders == h] for h in range(holders)]
        pub = Proc(python, ["--role", "worker", "--runtime", kind, "--address", address])
        subs = [Proc(python, ["--role", "worker", "--runtime", kind, "--address", address, "--subs", ",".join(p)])
                for p in plan]
        procs += [pub, *subs]
        for p in (pub, *subs):
            p.wait("ready", 60)
        time.sleep(1.0)  # the gRPC host (and the mesh directory) settle the subscriptions
        for n in (1, publishes):  # a warm-up publish reaches every subscriber; then the measured run
            for p, names in zip(subs, plan, strict=True):
                p.ask(f"expect {n * len(names)}")
                p.wait("expecting")
            pub.ask(f"publish {n}")
            t0 = pub.wait("t0")
            ends = [p.wait("done", 600)["done"] for p in subs]
        elapsed = max(ends) - t0["t0"]
        pub.ask(f"rtt {rtt}")
        r = pub.wait("rtt_median_ms", 300)
    finally:
        for p in reversed(procs):
            p.close()
    delivered = publishes * subscribers
    return {"runtime": kind, "workers": workers, "publishes": publishes, "subscribers": subscribers,
            "delivered": delivered, "seconds": round(elapsed, 3), "issue_seconds": round(t0["issued"], 3),
            "delivered_per_s": round(delivered / elapsed), "rtt_median_ms": round(r["rtt_median_ms"], 3),
            "rtt_p90_ms": round(r["rtt_p90_ms"], 3)}


def table(rows: list[dict]) -> str:
    cols = ["runtime", "workers", "delivered_per_s", "seconds", "rtt_median_ms", "rtt_p90_ms"]
    cells = [[str(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
    out = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(x, widths, strict=True)) for x in cells]
    return "\n".join(out)


def coordinate(a: argparse.Namespace) -> None:
    pythons = {"mesh": sys.executable, "grpc": a.grpc_python}
    kinds = [k for k in a.runtimes.split(",") if k == "mesh" or a.grpc_python]
    rows = []
    for rep in range(a.reps):
        for n in [int(x) for x in a.workers.split(",")]:
            for kind in kinds:
                row = run_one(kind, pythons[kind], n, a.publishes, a.subscribers, a.rtt)
                row["rep"] = rep + 1
                print(json.dumps(row), flush=True)
                rows.append(row)
    print(table(rows))
    summary = {}
    for kind in kinds:
        for n in {r["workers"] for r in rows}:
            mine = [r for r in rows if r["runtime"] == kind and r["workers"] == n]
            summary[f"{kind}_{n}w"] = {"delivered_per_s": statistics.median(r["delivered_per_s"] for r in mine),
                                       "rtt_median_ms": statistics.median(r["rtt_median_ms"] for r in mine)}
    print(json.dumps(summary, indent=1))
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as fh:
            json.dump({"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                   "date": time.strftime("%Y-%m-%d %H:%M:%S")},
                       "args": vars(a), "rows": rows, "summary": summary}, fh, indent=1)
        print(f"wrote {a.json}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["coordinator", "host", "worker"], default="coordinator")
    parser.add_argument("--runtime", choices=["mesh", "grpc"], default="mesh")
    parser.add_argument("--address", default="")
    parser.add_argument("--subs", default="")
    parser.add_argument("--runtimes", default="mesh,grpc")
    parser.add_argument("--grpc-python", default=None, help="a python with autogen-ext[grpc] (a separate venv)")
    parser.add_argument("--workers", default="2,4", help="worker counts to run (publisher + holders of subscribers)")
    parser.add_argument("--publishes", type=int, default=10_000)
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--rtt", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--json", default=None)
    a = parser.parse_args()
    if a.role == "host":
        asyncio.run(host_main(a.runtime, a.address))
    elif a.role == "worker":
        asyncio.run(worker_main(a.runtime, a.address, [s for s in a.subs.split(",") if s]))
    else:
        coordinate(a)
