"""Pyro5 beside the mesh in ``latency.py`` (``--pyro-python PATH``): an echo server and a timing client.

Both run under the Python given (a venv with Pyro5, e.g. ``python3 -m venv /work/bench-venv-pyro &&
/work/bench-venv-pyro/bin/pip install Pyro5==5.17``), never in the mesh's: this file imports
nothing of the mesh and only the standard library besides Pyro5.

    PY benchmarks/_pyro.py serve                 # prints "uri URI pid PID", serves until stdin closes
    PY benchmarks/_pyro.py time URI PID N WARMUP  # prints one JSON line: the timed calls' results

The server is a ``Pyro5.api.Daemon`` on 127.0.0.1 (a free port) with Pyro5's defaults (serpent,
a thread per connection); the client is one ``Proxy`` calling ``echo("hello")``.
"""

from __future__ import annotations

import json
import os
import sys
import time

from _common import exit_with_parent


def _cpu(pid: int | None = None) -> float:
    if pid is None:
        t = os.times()
        return t.user + t.system
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve() -> None:
    import Pyro5.api

    @Pyro5.api.expose
    class Echo:
        def echo(self, s):  # noqa: ANN001, ANN202 - Pyro5's own style
            return s

    daemon = Pyro5.api.Daemon(host="127.0.0.1", port=0)
    uri = daemon.register(Echo(), "echo")

    exit_with_parent()
    print(f"uri {uri} pid {os.getpid()}", flush=True)
    daemon.requestLoop()


def time_calls(uri: str, server_pid: int, n: int, warmup: int) -> None:
    import Pyro5.api

    proxy = Pyro5.api.Proxy(uri)
    assert proxy.echo("hello") == "hello"
    for _ in range(warmup):
        proxy.echo("hello")
    clock = time.perf_counter
    xs = []
    append = xs.append
    echo = proxy.echo
    c0, s0 = _cpu(), _cpu(server_pid)
    for _ in range(n):
        t = clock()
        echo("hello")
        append(clock() - t)
    c1, s1 = _cpu(), _cpu(server_pid)
    proxy._pyroRelease()
    xs.sort()
    print(json.dumps({"times": xs, "client_cpu_us": (c1 - c0) / n * 1e6, "server_cpu_us": (s1 - s0) / n * 1e6}))


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve()
    else:
        time_calls(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
