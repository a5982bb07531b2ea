"""What one idle turn of the I/O loop's poll costs with N peers: zmq_poll over every socket against an
epoll set of the sockets' ``ZMQ_FD``s (the cost of the poll alone, nothing ready).

A client's loop polls 4 sockets per server (the request DEALER, its monitor, the control DEALER, its
monitor): this connects N such groups to N ROUTERs in one process (tcp on loopback) and times, per
turn, with nothing to read:

- ``zmq_poll``: ``zmq.zmq_poll`` over the 4N sockets and a pipe, timeout 0 (what ``Loop.turn`` does;
  a blocking turn makes this pass twice, before and after the sleep);
- ``epoll``: ``select.epoll.poll(0)`` over their FDs, registered once (what an epoll loop would do
  per turn; ``ZMQ_EVENTS`` is then read only of the sockets whose FD fired);
- ``split``: what ``Loop.turn`` does since loop6 (transport/_edge.py): ``zmq_poll`` over the two
  DEALERs of each group, the pipe and an epoll set holding the monitors' FDs;
- ``events``: ``ZMQ_EVENTS`` of each socket (what a level check of every socket before a sleep costs).

``--busy``: a turn with one message instead (a ROUTER sends one to one DEALER, round robin; the turn
waits for it and reads it): ``zmq_poll`` with a timeout (both passes), against ``epoll``: a wait on
the set, ``ZMQ_EVENTS`` of the sockets whose FD fired, read until ``EVENTS`` says nothing is left
(which leaves the FD armed: the edge-triggered protocol an epoll loop would follow).

``--server``: a lone sync call's server turn (one ROUTER and the wake pipe; a client thread sends a
request, waits for the reply, sends the next): ``zmq_poll`` as ``Loop.turn`` and ``_read_requests``
do it (a blocking poll, the read, a 0-timeout poll for a second message, the reply) against
``epoll`` (a wait on the set, the read (no ``ZMQ_EVENTS`` first), ``ZMQ_EVENTS`` for a second message, which re-arms the FD,
the reply, ``ZMQ_EVENTS`` again after the send: a send may process the socket's commands). Under
``strace -c -f`` the difference in syscalls per call is the server's (the client is the same).

Syscalls per turn: run it under ``strace -c -f`` with ``--only`` (the counts are for 5 x ``--turns``).

    bin/isolated .venv/bin/python benchmarks/loop_poll.py --peers 5 20 50
    bin/isolated strace -c -f .venv/bin/python benchmarks/loop_poll.py --peers 20 --only zmq_poll --turns 2000
    bin/isolated .venv/bin/python benchmarks/loop_poll.py --server [--only zmq_poll|epoll]
"""

from __future__ import annotations

import argparse
import os
import select
import time

import zmq

EVENTS = int(zmq.EVENTS)


def _groups(ctx: zmq.Context, n: int) -> tuple[list, list]:
    routers, socks = [], []
    for _ in range(n):
        r = ctx.socket(zmq.ROUTER)
        port = r.bind_to_random_port("tcp://127.0.0.1")
        routers.append(r)
        for _ in range(2):  # the request DEALER and the control DEALER, each with its monitor
            d = ctx.socket(zmq.DEALER)
            d.linger = 0
            mon = d.get_monitor_socket()
            d.connect(f"tcp://127.0.0.1:{port}")
            socks += [d, mon]
    return routers, socks


def _settle(socks: list) -> None:
    """Read the monitors' connect events until nothing is left (the poll is then idle)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        ready = zmq.zmq_poll([(s, zmq.POLLIN) for s in socks], 200)
        if not ready:
            return
        for s, _ in ready:
            while s.get(EVENTS) & zmq.POLLIN:
                s.recv_multipart()


def _idle(socks: list, items: list, ep: select.epoll, turns: int) -> dict:
    """A turn with nothing ready, three ways."""

    def run_zmq_poll() -> None:
        for _ in range(turns):
            zmq.zmq_poll(items, 0)

    def run_epoll() -> None:
        for _ in range(turns):
            ep.poll(0)

    def run_events() -> None:
        for _ in range(turns):
            for s in socks:
                s.get(EVENTS)

    mons = select.epoll()
    for s in socks[1::2]:  # the monitors
        mons.register(s.get(zmq.FD), select.EPOLLIN)
    split = [(s, zmq.POLLIN) for s in socks[0::2]] + [items[-1], (mons.fileno(), zmq.POLLIN)]

    def run_split() -> None:
        for _ in range(turns):
            zmq.zmq_poll(split, 0)

    return {"zmq_poll": run_zmq_poll, "split": run_split, "epoll": run_epoll, "events": run_events}


def _busy(routers: list, socks: list, items: list, ep: select.epoll, turns: int) -> dict:
    """One message per turn to one of the request DEALERs (socks[0::4]), round robin."""
    dealers = socks[0::4]
    by_fd = {s.get(zmq.FD): s for s in socks}
    idents = []
    for d, r in zip(dealers, routers, strict=True):  # learn each DEALER's identity on its ROUTER
        d.send(b"hi")
        idents.append((r, r.recv_multipart()[0]))
    for d in dealers:
        d.get(EVENTS)
    pairs = list(zip(idents, dealers, strict=True))

    def run_zmq_poll() -> None:
        for i in range(turns):
            (r, ident), d = pairs[i % len(pairs)]
            r.send_multipart([ident, b"x"])
            for s, _ in zmq.zmq_poll(items, 1000):
                s.recv()

    def run_epoll() -> None:
        for d in dealers:  # re-arm: zmq_poll's turns left the last DEALER read without EVENTS after it
            d.get(EVENTS)
        for i in range(turns):
            (r, ident), d = pairs[i % len(pairs)]
            r.send_multipart([ident, b"x"])
            got = False
            while not got:
                for fd, _ in ep.poll(1.0):
                    s = by_fd.get(fd)
                    while s is not None and s.get(EVENTS) & zmq.POLLIN:  # drain: the FD is armed after
                        s.recv()
                        got = True

    return {"zmq_poll": run_zmq_poll, "epoll": run_epoll}


def _server(turns: int, only: str | None) -> None:
    """The ``--server`` mode: CPU per call of the serving thread, both ways, interleaved blocks."""
    import threading

    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    wake_r, wake_w = os.pipe()
    items = [(wake_r, zmq.POLLIN), (router, zmq.POLLIN)]
    ep = select.epoll()
    ep.register(wake_r, select.EPOLLIN)
    ep.register(router.get(zmq.FD), select.EPOLLIN)
    names = [only] if only else ["zmq_poll", "epoll"]
    total = 5 * len(names) * turns

    def client() -> None:
        d = ctx.socket(zmq.DEALER)
        d.connect(f"tcp://127.0.0.1:{port}")
        for _ in range(total):
            d.send(b"x")
            d.recv()
        d.close(0)

    def serve_zmq_poll() -> None:
        for _ in range(turns):
            while not zmq.zmq_poll(items, 1000):
                pass
            ident, msg = router.recv_multipart()
            zmq.zmq_poll(items[1:], 0)  # a second message? (Routers._read_requests)
            router.send_multipart([ident, msg])

    def serve_epoll() -> None:
        router.get(EVENTS)  # armed
        for _ in range(turns):
            while True:  # the FD fired: read (a spurious wake-up reads nothing, the FD is armed again)
                ep.poll(1.0)
                try:
                    ident = router.recv(zmq.NOBLOCK)
                    break
                except zmq.Again:
                    pass
            msg = router.recv()
            router.get(EVENTS)  # a second message? (and the FD is armed again)
            router.send_multipart([ident, msg])
            router.get(EVENTS)  # a send may have processed the socket's commands: armed again

    runs = {"zmq_poll": serve_zmq_poll, "epoll": serve_epoll}
    t = threading.Thread(target=client)
    t.start()
    best = {k: float("inf") for k in names}
    for _ in range(5):
        for k in names:
            t0 = time.thread_time()
            runs[k]()
            best[k] = min(best[k], (time.thread_time() - t0) / turns * 1e6)
    t.join()
    print("server thread: " + ", ".join(f"{k} {best[k]:.2f} us" for k in names) + " CPU per call (best of 5 blocks)")
    ep.close()
    os.close(wake_r)
    os.close(wake_w)
    router.close(0)
    ctx.term()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", type=int, nargs="+", default=[5, 20, 50])
    ap.add_argument("--turns", type=int, default=5000)
    ap.add_argument("--only", choices=["zmq_poll", "split", "epoll", "events"])
    ap.add_argument("--busy", action="store_true", help="one message per turn (see the docstring)")
    ap.add_argument("--server", action="store_true", help="a lone sync call's server turn (see the docstring)")
    args = ap.parse_args()
    print(f"load {open('/proc/loadavg').read().split()[:3]}")
    if args.server:
        _server(args.turns, args.only)
        return
    for n in args.peers:
        ctx = zmq.Context()
        routers, socks = _groups(ctx, n)
        _settle(socks)
        wake_r, wake_w = os.pipe()
        items = [(s, zmq.POLLIN) for s in socks] + [(wake_r, zmq.POLLIN)]
        ep = select.epoll()
        for s in socks:
            ep.register(s.get(zmq.FD), select.EPOLLIN)
        ep.register(wake_r, select.EPOLLIN)
        ep.poll(0)
        for s in socks:  # arm every FD (EVENTS read after the last operation)
            s.get(EVENTS)

        runs = _idle(socks, items, ep, args.turns)
        if args.busy:
            runs = _busy(routers, socks, items, ep, args.turns)
        names = [args.only] if args.only else list(runs)
        if args.busy:
            names = [k for k in names if k in runs]
        best = {k: float("inf") for k in names}
        for _ in range(5):  # interleaved blocks, the best of each
            for k in names:
                t0 = time.thread_time()
                runs[k]()
                best[k] = min(best[k], (time.thread_time() - t0) / args.turns * 1e6)
        row = ", ".join(f"{k} {best[k]:.2f} us" for k in names)
        print(f"{n} peers ({len(socks)} sockets): {row} per turn (CPU, best of 5 blocks)")
        ep.close()
        os.close(wake_r)
        os.close(wake_w)
        for s in socks + routers:
            s.close(0)
        ctx.term()


if __name__ == "__main__":
    main()
