"""AgentScope 0.1.6 in ``peers.py``: every row of the peers' table in its distributed mode.

Runs under a Python with ``agentscope[distribute]==0.1.6`` (``benchmarks/peers_setup.sh``); imports nothing of
the mesh.

    PY benchmarks/_peer_agentscope.py ROW [--agents N] [--calls N] [--mb X] [--reps N] [--sleep S]   (see _peer_base)

``agentscope.init(disable_saving=True)`` first (no run directory written), then ``AgentBase`` subclasses made
distributed as its docs show: ``Agent(..., to_dist=True)`` (child mode: each agent launches its own server
process) or ``to_dist={"host": ..., "port": ...}`` against an ``RpcAgentServerLauncher(...).launch()`` server
(gRPC, cloudpickle). ``reply`` and methods marked ``@async_func`` return an ``AsyncResult`` placeholder;
other public methods are sync. A placeholder passed to another agent is fetched by that agent from the first
one's server (row "future").
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _peer_base import Server, init_then_calls, main, median_ms, pss_mib, running_with, time_sync  # noqa: E402

import agentscope  # noqa: E402
from agentscope.agents import AgentBase  # noqa: E402
from agentscope.message import Msg  # noqa: E402
from agentscope.rpc import AsyncResult, async_func  # noqa: E402
from agentscope.server import RpcAgentServerLauncher  # noqa: E402

ME = "_peer_agentscope.py"


class PeerAgent(AgentBase):
    def __init__(self, name: str, sleep_s: float = 0.0) -> None:
        super().__init__(name=name)
        self.sleep_s = sleep_s

    def reply(self, x=None) -> Msg:  # noqa: ANN001 - an async_func in AgentBase
        time.sleep(self.sleep_s)
        return Msg(self.name, "done", role="assistant")

    def echo(self, s):  # noqa: ANN001, ANN201
        return s

    @async_func
    def work(self, i):  # noqa: ANN001, ANN201
        return i

    def nbytes(self, data):  # noqa: ANN001, ANN201
        return len(data)

    @async_func
    def produce(self, n):  # noqa: ANN001, ANN201
        return b"\x01" * n

    def consume(self, data):  # noqa: ANN001, ANN201
        if isinstance(data, AsyncResult):
            data = data.result()  # fetched from the producer's server
        return len(data)


def _init() -> None:
    agentscope.init(project="peers", disable_saving=True, logger_level="WARNING")


def _launch() -> RpcAgentServerLauncher:
    launcher = RpcAgentServerLauncher(host="localhost", port=None, custom_agent_classes=[PeerAgent])
    launcher.launch(in_subprocess=True)
    return launcher


def serve(args) -> None:  # noqa: ANN001
    _init()
    launcher = _launch()
    a = PeerAgent("probe", to_dist={"host": "localhost", "port": launcher.port})
    assert a.echo("hello") == "hello"  # the server has served one call
    print("ready", launcher.port, "pid", launcher.server.pid, flush=True)
    while os.read(0, 4096):  # until the parent closes our stdin
        pass
    launcher.shutdown()


def _agents(n: int, where: dict | bool, sleep_s: float = 0.0) -> list:
    return [PeerAgent(f"A{i}", sleep_s, to_dist=dict(where) if isinstance(where, dict) else where) for i in range(n)]


def child(args) -> dict:  # noqa: ANN001
    t0 = time.perf_counter()
    _init()
    agents = _agents(args.agents, True)  # each agent launches its own server process
    for a in agents:
        assert a.echo("hello") == "hello"
    t1 = time.perf_counter()
    for a in agents:
        a.server_launcher.shutdown()
    return {"init_s": t1 - t0}


def client(args) -> dict:  # noqa: ANN001
    port, n = int(args.rest[1]), int(args.rest[2])

    def make() -> list:
        _init()
        return _agents(n, {"host": "localhost", "port": port})

    return init_then_calls(make, lambda agents: [a.echo("hello") for a in agents])


def demo(args) -> dict:  # noqa: ANN001
    _init()
    agents = _agents(args.agents, True, args.sleep)  # as AgentScope's distributed demo: child mode
    for a in agents:
        a.echo("hello")
    t0 = time.perf_counter()
    msgs = [a(Msg("system", "query", role="system")) for a in agents]
    assert [m.content for m in msgs] == ["done"] * len(agents)
    dt = time.perf_counter() - t0
    for a in agents:
        a.server_launcher.shutdown()
    return {"seconds": dt}


def _on_server(fn) -> dict:  # noqa: ANN001
    _init()
    launcher = _launch()
    try:
        return fn({"host": "localhost", "port": launcher.port})
    finally:
        launcher.shutdown()


def sync(args) -> dict:  # noqa: ANN001
    def run(where: dict) -> dict:
        a = _agents(1, where)[0]
        return time_sync(lambda: a.echo("hello"), args.calls, max(100, args.calls // 10))
    return _on_server(run)


def async_(args) -> dict:  # noqa: ANN001
    def run(where: dict) -> dict:
        agents = _agents(4, where)
        out = {}
        for key, group in (("one_per_s", agents[:1]), ("four_per_s", agents)):
            [r.result() for r in [group[i % len(group)].work(i) for i in range(100)]]  # warm
            t0 = time.perf_counter()
            got = [r.result() for r in [group[i % len(group)].work(i) for i in range(args.calls)]]
            out[key] = args.calls / (time.perf_counter() - t0)
            assert got == list(range(args.calls))
        return out
    return _on_server(run)


def bulk(args) -> dict:  # noqa: ANN001
    data = b"\x01" * int(args.mb * 1e6)

    def run(where: dict) -> dict:
        a = _agents(1, where)[0]
        return {"ms": median_ms(lambda: a.nbytes(data), args.reps)}
    return _on_server(run)


def future(args) -> dict:  # noqa: ANN001
    _init()
    l1, l2 = _launch(), _launch()
    n = int(args.mb * 1e6)
    try:
        a = _agents(1, {"host": "localhost", "port": l1.port})[0]
        b = _agents(1, {"host": "localhost", "port": l2.port})[0]

        def transfer() -> None:
            assert b.consume(a.produce(n)) == n

        return {"ms": median_ms(transfer, args.reps)}
    finally:
        l1.shutdown()
        l2.shutdown()


def fanout(args) -> dict:  # noqa: ANN001
    def run(where: dict) -> dict:
        t0 = time.perf_counter()
        agents = _agents(args.agents, where)
        t1 = time.perf_counter()
        assert [m.content for m in [a(Msg("system", "hi", role="system")) for a in agents]] == ["done"] * args.agents
        return {"create_s": t1 - t0, "create_call_s": time.perf_counter() - t0}
    return _on_server(run)


def pss(args) -> dict:  # noqa: ANN001
    with Server(ME) as s:
        time.sleep(0.2)
        return {"pss_mib": pss_mib([int(s.words[-1])])}


if __name__ == "__main__":
    main({"serve": serve, "child": child, "running": running_with(ME, 0), "client": client, "demo": demo, "sync": sync,
          "async": async_, "bulk": bulk, "future": future, "fanout": fanout, "pss": pss})
