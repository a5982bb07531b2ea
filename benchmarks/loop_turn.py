"""CPU of one idle ``Loop.turn`` of a client-like I/O loop with N servers, in situ: the real
:class:`transport._loop.Loop`, each server's two DEALERs and their monitors made by
:class:`transport._sockets.DealerRecipe` (as transport._dealers makes them) and registered with the
loop; 2,000 turns with timeout 0 run from a command on the loop's thread, best of 5 blocks.
Run it with ``MESH_LOOP_EPOLL=0`` and without, interleaved, for A/B (NOTES-loop6).

    for e in 1 0 1 0; do MESH_LOOP_EPOLL=$e bin/isolated .venv/bin/python benchmarks/loop_turn.py 50; done
"""

from __future__ import annotations

import os
import sys
import threading
import time

import zmq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from transport._loop import Call, Loop  # noqa: E402
from transport._sockets import DealerRecipe, monitor_events  # noqa: E402


def _on_loop(loop: Loop, fn) -> None:
    done = threading.Event()
    loop.submit(Call(lambda: (fn(), done.set())))
    done.wait(60)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    ctx = zmq.Context()
    routers = []
    for _ in range(n):
        r = ctx.socket(zmq.ROUTER)
        r.linger = 0
        routers.append((r, r.bind_to_random_port("tcp://127.0.0.1")))
    loop = Loop(teardown=lambda: None, name="loop-turn")
    loop.start()
    recipe = DealerRecipe(ctx, None, connect_timeout=2.0, heartbeat_ivl=1.0, heartbeat_timeout=3.0, slack=0.5)
    socks: list = []

    def setup() -> None:
        for _, port in routers:
            for hb in (False, True):  # the request DEALER and the control one, each with its monitor
                s, m = recipe.connect(f"tcp://127.0.0.1:{port}", heartbeat=hb, immediate=True)
                loop.add(s, lambda mask: None)
                loop.add(m, lambda mask, m=m: list(monitor_events(m)))
                socks.extend([s, m])

    out: list = []

    def measure() -> None:
        me = threading.get_ident()
        end = time.monotonic() + 1.0  # turns for a second: the connections' events are read (idle after)
        while time.monotonic() < end:
            loop.turn(me, None, 100)
        best = float("inf")
        for _ in range(5):
            t0 = time.thread_time()
            for _ in range(2000):
                loop.turn(me, None, 0)
            best = min(best, (time.thread_time() - t0) / 2000 * 1e6)
        out.append((len(loop._poller.sockets), best))

    _on_loop(loop, setup)
    _on_loop(loop, measure)
    load = open("/proc/loadavg").read().split()[:3]
    flag = os.environ.get("MESH_LOOP_EPOLL", "1")
    print(
        f"MESH_LOOP_EPOLL={flag} {n} servers: {out[0][0]} poll items, {out[0][1]:.2f} us CPU per idle turn (load {load})"
    )

    def close() -> None:
        for s in socks:
            loop.remove(s)
            s.close(0)

    _on_loop(loop, close)
    loop.stop()
    loop.thread.join(5)
    for r, _ in routers:
        r.close(0)
    ctx.term()


if __name__ == "__main__":
    main()
