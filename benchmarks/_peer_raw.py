"""Raw pyzmq in ``peers.py``, for the two rows the mesh's own benchmarks have no raw figure for: init of N
"agents" (a DEALER each, on the raw server of ``_raw.py``), in child mode and against a running server.

    .venv/bin/python benchmarks/_peer_raw.py child|running [--agents N]

Child mode: the raw server is started as a subprocess (``_raw.py serve``) then N DEALERs each make one echo
call: the raw floor of ``child_start.py``. Running: a fresh process creates N DEALERs connected to a raw
server already running (the init), then one echo each (reported apart): the raw floor of ``footprint.py``'s
init. pyzmq and msgpack only (``_raw.py``); nothing of the mesh.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _peer_base import fresh_client, init_then_calls, main  # noqa: E402

ME = "_peer_raw.py"


def child(args) -> dict:  # noqa: ANN001
    from _raw import RawClient, RawServer  # the import is not timed
    t0 = time.perf_counter()
    server = RawServer()
    clients = [RawClient(server.address) for _ in range(args.agents)]
    for c in clients:
        assert c.echo("hello") == "hello"
    t1 = time.perf_counter()
    for c in clients:
        c.close()
    server.stop()
    return {"init_s": t1 - t0}


def running(args) -> dict:  # noqa: ANN001
    from _raw import RawServer
    server = RawServer()
    try:
        return fresh_client(ME, "init", server.address, str(args.agents))
    finally:
        server.stop()


def client(args) -> dict:  # noqa: ANN001
    from _raw import RawClient
    address, n = args.rest[1], int(args.rest[2])
    return init_then_calls(lambda: [RawClient(address) for _ in range(n)], lambda cs: [c.echo("hello") for c in cs])


if __name__ == "__main__":
    main({"child": child, "running": running, "client": client})
