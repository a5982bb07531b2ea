"""What every peer module of ``peers.py`` shares (``_peer_pyro.py``, ``_peer_agentscope.py``, ``_peer_ray.py``,
``_peer_raw.py``): the command line, the JSON line, timing and memory helpers.

Standard library only (and ``_common``, which is standard library only too): a peer module runs under that
peer's own Python and imports nothing of the mesh.

    PY benchmarks/_peer_X.py ROW [--agents N] [--calls N] [--mb X] [--reps N] [--sleep S]

prints one JSON line, the row's figures (see ``ROWS``); a row the peer has no counterpart for prints
``{"na": "why"}``. The server side of a row runs in a subprocess of the peer module (the peer's own way of
starting one); a "fresh process" figure runs in a further subprocess (``PY _peer_X.py client ...``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

from _common import median, percentile

HERE = os.path.dirname(os.path.abspath(__file__))
# row -> the keys its JSON line has
ROWS = {
    "child": ("init_s",),            # N agents, the framework starts its own server: creation + one call each
    "running": ("init_s",),          # N agents on a server already running, from a fresh process: creation
    "demo": ("seconds",),            # N agents whose reply sleeps S s, all called at once, until every reply
    "sync": ("median_us", "p99_us"),  # echo("hello") round trips
    "async": ("one_per_s", "four_per_s"),  # N calls issued, then gathered: on 1 actor, round-robin on 4
    "bulk": ("ms",),                 # a sync call with a 10 MB bytes argument returning its length
    "future": ("ms",),               # 10 MB made on A, consumed on B through a future / reference
    "fanout": ("create_s", "create_call_s"),  # N actors on one server: created; created + one call each
    "pss": ("pss_mib",),             # the idle server's PSS after one call (all its processes)
}


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("row", choices=[*ROWS, "serve", "client"])
    ap.add_argument("rest", nargs="*")
    ap.add_argument("--agents", type=int, default=5)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--mb", type=float, default=10)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--sleep", type=float, default=5.0)
    return ap.parse_args(argv)


def emit(payload: dict) -> None:
    print(json.dumps(payload), flush=True)


def main(handlers: dict[str, Callable[[argparse.Namespace], dict | None]], na: dict[str, str] | None = None) -> None:
    """Run the handler of the row named on the command line; ``na``: why a row has none."""
    args = parse(sys.argv[1:])
    handler = handlers.get(args.row)
    if handler is None:
        emit({"na": (na or {}).get(args.row, f"no counterpart for row {args.row}")})
        return
    out = handler(args)
    if out is not None:
        emit(out)


def time_sync(fn: Callable[[], object], n: int, warmup: int) -> dict:
    for _ in range(warmup):
        fn()
    clock = time.perf_counter
    xs = []
    for _ in range(n):
        t = clock()
        fn()
        xs.append(clock() - t)
    return {"median_us": median(xs) * 1e6, "p99_us": percentile(xs, 99) * 1e6}


def median_ms(fn: Callable[[], object], reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    xs = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        xs.append(time.perf_counter() - t)
    return median(xs) * 1e3


def pss_mib(pids: list[int]) -> float:
    """The sum of the PSS of ``pids`` (``/proc/PID/smaps_rollup``, as ``smem`` reads it), MiB."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) / 1024
                        break
        except OSError:
            pass
    return total


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc/*/stat's parent field)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def running_with(module: str, word: int) -> Callable[[argparse.Namespace], dict]:
    """Row "running": ``module serve`` in a subprocess, then ``module client init WORD AGENTS`` in a fresh one."""
    def running(args: argparse.Namespace) -> dict:
        with Server(module) as s:
            return fresh_client(module, "init", s.words[word], str(args.agents))
    return running


def fresh_client(module: str, *args: str, timeout: float = 300) -> dict:
    """Run ``PY module client ARGS`` (a fresh interpreter of this peer's Python) and return its JSON line."""
    out = subprocess.run([sys.executable, os.path.join(HERE, module), "client", *args],
                         capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode or not lines:
        raise RuntimeError(f"{module} client failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(lines[-1])


class Server:
    """``PY module serve ARGS`` in a subprocess; it prints one line "ready WORDS..." and ends when its stdin closes."""

    def __init__(self, module: str, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, module), "serve", *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "ready":
            self.stop()
            raise RuntimeError(f"{module} serve did not start: {line}")
        self.words = line[1:]

    def stop(self) -> None:
        below = [p for p in descendants(self.proc.pid) if p != self.proc.pid]  # what the server started
        try:
            self.proc.stdin.close()
            self.proc.wait(30)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        deadline = time.monotonic() + 10
        while below and time.monotonic() < deadline:  # gone on their own, or ended by their PID
            below = [p for p in below if os.path.exists(f"/proc/{p}")]
            time.sleep(0.1)
        for p in below:
            try:
                os.kill(p, 9)
            except OSError:
                pass

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def init_then_calls(make: Callable[[], list], call_all: Callable[[list], object]) -> dict:
    """A fresh process's "init" against a running server: ``make()`` the agents (timed), then ``call_all`` (apart)."""
    t0 = time.perf_counter()
    agents = make()
    t1 = time.perf_counter()
    call_all(agents)
    return {"init_s": t1 - t0, "first_calls_s": time.perf_counter() - t1}
