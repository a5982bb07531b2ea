"""Pyro5 in ``peers.py``: every row of the peers' table with Pyro5's defaults (serpent, a thread per connection).

Runs under a Python with Pyro5 (``benchmarks/peers_setup.sh``); imports nothing of the mesh.

    PY benchmarks/_peer_pyro.py ROW [--agents N] [--calls N] [--mb X] [--reps N] [--sleep S]   (see _peer_base)

The server is a ``Pyro5.api.Daemon`` on 127.0.0.1 in a subprocess. Pyro5 has no child mode (the caller starts
the daemon process itself), no remote creation (a factory object registers each new agent and returns its
proxy, Pyro's own pattern), no futures (Pyro4's async proxies are gone: concurrency is a thread per proxy) and
so no transfer through a future (row "future": n/a).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import exit_with_parent  # noqa: E402
from _peer_base import Server, init_then_calls, main, median_ms, pss_mib, running_with, time_sync  # noqa: E402

ME = "_peer_pyro.py"


def serve(args) -> None:  # noqa: ANN001
    import Pyro5.api

    sleep_s = float(args.rest[0]) if args.rest else 0.0

    @Pyro5.api.expose
    class Agent:
        def echo(self, s):  # noqa: ANN001, ANN202 - Pyro5's own style
            return s

        def work(self, i):  # noqa: ANN001, ANN202
            return i

        def nbytes(self, data):  # noqa: ANN001, ANN202
            return len(data)

        def reply(self, msg):  # noqa: ANN001, ANN202
            time.sleep(sleep_s)
            return msg

    @Pyro5.api.expose
    class Factory:
        def create(self):  # noqa: ANN202
            agent = Agent()
            self._pyroDaemon.register(agent)
            return agent  # a registered object goes back as its proxy (Pyro's autoproxy)

    daemon = Pyro5.api.Daemon(host="127.0.0.1", port=0)
    agents = [daemon.register(Agent(), f"agent{i}") for i in range(4)]
    factory = daemon.register(Factory(), "factory")
    session = daemon.register(Pyro5.api.behavior(instance_mode="session")(type("Session", (Agent,), {})), "session")  # one per proxy
    exit_with_parent()
    print("ready", factory, session, *agents, "pid", os.getpid(), flush=True)
    daemon.requestLoop()


def _proxies(uri: str, n: int) -> list:
    import Pyro5.api
    ps = [Pyro5.api.Proxy(uri) for _ in range(n)]
    for p in ps:
        p._pyroBind()
    return ps


def child(args) -> dict:  # noqa: ANN001
    import Pyro5.api  # noqa: F401 - the import is not timed (as child_start.py times mesh's apart)
    t0 = time.perf_counter()
    with Server(ME) as s:  # the caller starts a daemon process: Pyro5's "child mode"
        ps = _proxies(s.words[1], args.agents)
        for p in ps:
            assert p.echo("hello") == "hello"
        t1 = time.perf_counter()
        for p in ps:
            p._pyroRelease()
    return {"init_s": t1 - t0}


def client(args) -> dict:  # noqa: ANN001
    import Pyro5.api  # noqa: F401
    uri, n = args.rest[1], int(args.rest[2])
    return init_then_calls(lambda: _proxies(uri, n), lambda ps: [p.echo("hello") for p in ps])


def demo(args) -> dict:  # noqa: ANN001
    with Server(ME, str(args.sleep)) as s:
        ps = _proxies(s.words[1], args.agents)
        t0 = time.perf_counter()

        def reply(p):  # noqa: ANN001, ANN202 - a thread per proxy, which the thread takes over
            p._pyroClaimOwnership()
            return p.reply("query")

        with ThreadPoolExecutor(len(ps)) as pool:
            assert list(pool.map(reply, ps)) == ["query"] * len(ps)
        return {"seconds": time.perf_counter() - t0}


def sync(args) -> dict:  # noqa: ANN001
    import Pyro5.api
    with Server(ME) as s:
        p = Pyro5.api.Proxy(s.words[2])
        return time_sync(lambda: p.echo("hello"), args.calls, max(100, args.calls // 10))


def _rate(uris: list[str], n: int) -> float:
    """``n`` calls of work(i) from 8 threads, each with its own proxies (a proxy belongs to one thread)."""
    import Pyro5.api
    local = threading.local()

    def call(i: int) -> int:
        ps = getattr(local, "ps", None)
        if ps is None:
            ps = local.ps = [Pyro5.api.Proxy(u) for u in uris]
        return ps[i % len(ps)].work(i)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(call, range(64)))  # warm: every thread's proxies connected
        t0 = time.perf_counter()
        got = list(pool.map(call, range(n)))
        dt = time.perf_counter() - t0
    assert got == list(range(n))
    return n / dt


def async_(args) -> dict:  # noqa: ANN001
    with Server(ME) as s:
        agents = s.words[2:6]
        return {"one_per_s": _rate(agents[:1], args.calls), "four_per_s": _rate(agents, args.calls)}


def bulk(args) -> dict:  # noqa: ANN001
    import Pyro5.api
    data = b"\x01" * int(args.mb * 1e6)
    with Server(ME) as s:
        p = Pyro5.api.Proxy(s.words[2])
        return {"ms": median_ms(lambda: p.nbytes(data), args.reps)}


def fanout(args) -> dict:  # noqa: ANN001
    import Pyro5.api
    with Server(ME) as s:
        factory = Pyro5.api.Proxy(s.words[0])
        t0 = time.perf_counter()
        agents = [factory.create() for _ in range(args.agents)]
        t1 = time.perf_counter()
        for a in agents:  # one connection each; released, or the server's 80-thread pool is full
            assert a.echo("hello") == "hello"
            a._pyroRelease()
        return {"create_s": t1 - t0, "create_call_s": time.perf_counter() - t0}


def pss(args) -> dict:  # noqa: ANN001
    import Pyro5.api
    with Server(ME) as s:
        p = Pyro5.api.Proxy(s.words[2])
        assert p.echo("hello") == "hello"
        time.sleep(0.2)
        return {"pss_mib": pss_mib([int(s.words[-1])])}


if __name__ == "__main__":
    main({"serve": serve, "child": child, "running": running_with(ME, 1), "client": client, "demo": demo, "sync": sync,
          "async": async_, "bulk": bulk, "fanout": fanout, "pss": pss},
         {"future": "Pyro5 has no futures (Pyro4's async proxies are gone), so no transfer through one"})
