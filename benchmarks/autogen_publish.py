"""AutoGen's distributed runtime, mesh vs gRPC: publish throughput and send_message round trip.

A host and 2 workers (in this process, one asyncio loop, the same for both runtimes). Ten
subscriber agents (types ``sub0``..``sub9``, each with a ``TypeSubscription`` to topic type
``bench``) live on worker 2; worker 1 publishes N small dataclass messages to that topic, so every
event crosses from one worker to the other. Timed: from the first publish until all ``10 * N``
deliveries were handled (delivered events/s); then ``--rtt`` sequential ``send_message`` calls from
worker 1 to an agent on worker 2 (median round trip).

    bin/isolated .venv/bin/python benchmarks/autogen_publish.py --runtime mesh
    python -m venv /tmp/agvenv && /tmp/agvenv/bin/pip install "autogen-ext[grpc]"
    bin/isolated /tmp/agvenv/bin/python benchmarks/autogen_publish.py --runtime grpc

Options: ``--publishes 10000 --subscribers 10 --rtt 500 --json PATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import time
from dataclasses import dataclass

from autogen_core import AgentId, MessageContext, RoutedAgent, TopicId, TypeSubscription, message_handler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("MESH_DISCOVERY", "0")


@dataclass
class Tick:
    n: int


@dataclass
class Echo:
    n: int


class State:
    target = 0
    count = 0
    done: asyncio.Event | None = None


class Sub(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("counts ticks")

    @message_handler
    async def on_tick(self, message: Tick, ctx: MessageContext) -> None:
        State.count += 1
        if State.count >= State.target and State.done is not None:
            State.done.set()

    @message_handler
    async def on_echo(self, message: Echo, ctx: MessageContext) -> Echo:
        return message


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def runtimes(kind: str):
    if kind == "grpc":
        from autogen_ext.runtimes.grpc import GrpcWorkerAgentRuntime, GrpcWorkerAgentRuntimeHost

        return GrpcWorkerAgentRuntimeHost, GrpcWorkerAgentRuntime
    from mesh.autogen import MeshWorkerRuntime, MeshWorkerRuntimeHost

    return MeshWorkerRuntimeHost, MeshWorkerRuntime


async def main(args: argparse.Namespace) -> dict:
    Host, Worker = runtimes(args.runtime)
    address = f"localhost:{free_port()}"
    host = Host(address=address)
    host.start()
    w1, w2 = Worker(host_address=address), Worker(host_address=address)
    await w1.start()
    await w2.start()
    try:
        for i in range(args.subscribers):
            await Sub.register(w2, f"sub{i}", Sub, skip_class_subscriptions=True)
            await w2.add_subscription(TypeSubscription("bench", f"sub{i}"))
        from autogen_core import try_get_known_serializers_for_type

        for rt in (w1, w2):
            rt.add_message_serializer(try_get_known_serializers_for_type(Tick))
            rt.add_message_serializer(try_get_known_serializers_for_type(Echo))
        await asyncio.sleep(1.0)  # let the gRPC host (or the mesh directory) settle subscriptions
        # warm-up: one publish reaches all subscribers
        State.done, State.count, State.target = asyncio.Event(), 0, args.subscribers
        await w1.publish_message(Tick(-1), TopicId("bench", "s"))
        await asyncio.wait_for(State.done.wait(), 60)

        State.done, State.count, State.target = asyncio.Event(), 0, args.publishes * args.subscribers
        t0 = time.perf_counter()
        for i in range(args.publishes):
            await w1.publish_message(Tick(i), TopicId("bench", "s"))
        t_issue = time.perf_counter() - t0
        await asyncio.wait_for(State.done.wait(), 600)
        elapsed = time.perf_counter() - t0

        rtts = []
        target = AgentId("sub0", "s")
        for i in range(args.rtt):
            t = time.perf_counter()
            await w1.send_message(Echo(i), target)
            rtts.append(time.perf_counter() - t)
    finally:
        await w1.stop()
        await w2.stop()
        await host.stop()
    return {
        "runtime": args.runtime,
        "workers": 2,
        "publishes": args.publishes,
        "subscribers": args.subscribers,
        "delivered": State.target,
        "seconds": round(elapsed, 3),
        "issue_seconds": round(t_issue, 3),
        "delivered_per_s": round(State.target / elapsed, 1),
        "rtt_median_ms": round(statistics.median(rtts) * 1000, 3),
        "rtt_p90_ms": round(sorted(rtts)[int(0.9 * len(rtts))] * 1000, 3),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=["mesh", "grpc"], default="mesh")
    parser.add_argument("--publishes", type=int, default=10_000)
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--rtt", type=int, default=500)
    parser.add_argument("--json", default=None)
    a = parser.parse_args()
    result = asyncio.run(main(a))
    print(json.dumps(result, indent=1))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(result, fh, indent=1)
