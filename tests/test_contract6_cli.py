"""Acceptance tests of API.md, sixth pass: what the ``zmq-agent-server start`` flags do, not only
that they are accepted (``--max-expire-time``, ``--max-len``, ``--capacity``, ``--no-advertise``,
``--pool-type redis --redis-url``, ``--state-store``), seen from a client and from the other commands."""

from __future__ import annotations

import gc
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time

import pytest

import mesh
from conftest import read_line, run_cli, wait_until

ADDR = re.compile(r"tcp://([\w.\-]+):(\d+)")


class Start:
    """``python -m mesh.server start ARGS`` in the foreground, once it printed its address."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "mesh.server", "start", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env={**os.environ, **(env or {})})  # fmt: skip
        m = ADDR.search(read_line(self.proc.stdout))
        assert m, "no address line"
        self.host, self.port = m.group(1), int(m.group(2))
        self.address = f"tcp://{self.host}:{self.port}"
        self.on = {"host": self.host, "port": self.port}

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc.stdout.close()


@pytest.fixture
def started():
    made: list[Start] = []

    def make(*args: str, **kw) -> Start:
        made.append(Start(*args, **kw))
        return made[-1]

    yield make
    mesh.shutdown()
    for s in made:
        s.stop(signal.SIGKILL)


class Jobs(metaclass=mesh.RpcMeta):
    def __init__(self) -> None:
        self.n = 0

    @mesh.async_func
    def make(self, v):
        return v

    def bump(self):
        self.n += 1
        return self.n

    def until(self, path):  # holds a worker until the file exists (bounded)
        end = time.monotonic() + 30
        while not os.path.exists(path) and time.monotonic() < end:
            time.sleep(0.01)
        return os.path.exists(path)


def _loose(jobs: Jobs, value) -> bytes:
    """A result that no live future holds: its future pickled (as a user saves it), then dropped."""
    fut = jobs.make(value)
    assert fut.result(timeout=10) == value
    data = pickle.dumps(fut)
    del fut
    gc.collect()
    return data


def _expired(data: bytes) -> bool:
    try:
        pickle.loads(data).result(timeout=10)
    except mesh.ResultExpired:
        return True
    return False


def test_max_expire_time_flag_drops_loose_results_and_keeps_held_ones(started):
    s = started("--no-advertise", "--max-expire-time", "0.5")
    jobs = Jobs(to_dist=s.on)
    held = jobs.make("held")
    assert held.result(timeout=10) == "held"
    data = _loose(jobs, "loose")
    t0 = time.monotonic()
    wait_until(lambda: _expired(data), timeout=20)
    assert time.monotonic() - t0 > 0.3  # not before its time
    assert held.result(timeout=10) == "held"  # API.md: max_expire_time bounds only results nobody holds


def test_max_len_flag_bounds_loose_results(started):
    s = started("--no-advertise", "--max-len", "2")
    jobs = Jobs(to_dist=s.on)
    first = _loose(jobs, "first")
    assert not _expired(first)
    for i in range(4):  # newer loose results push the first out
        _loose(jobs, i)
    assert _expired(first)


def test_capacity_flag_bounds_the_calls_that_run_at_once(started, tmp_path):
    s = started("--no-advertise", "--capacity", "2")
    gate = str(tmp_path / "open")
    workers = [Jobs(to_dist=s.on) for _ in range(3)]  # three objects: they could run concurrently
    futs = [w.until.remote(gate) for w in workers]

    def status():
        out = run_cli("status", s.address, "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    # two run, the third waits for a worker: counted in the load (running and waiting calls)
    seen = wait_until(lambda: (st := status())["running"] == 2 and st["load"] == 3 and st, timeout=20)
    assert seen["capacity"] == 2 and status()["running"] == 2
    open(gate, "w").close()
    assert [f.result(timeout=30) for f in futs] == [True, True, True]


def test_no_advertise_flag_keeps_a_server_out_of_discovery(started):
    env = {"MESH_DISCOVERY": "1"}
    shown = started("--name", "c6-shown", env=env)
    hidden = started("--name", "c6-hidden", "--no-advertise", env=env)

    def listed():
        out = run_cli("list", "--json", env=env)
        assert out.returncode == 0, out.stderr
        return out.stdout

    text = wait_until(lambda: (t := listed()) and shown.address in t and t, timeout=20)
    assert hidden.address not in text and "c6-hidden" not in text
    assert Jobs(to_dist=hidden.on).bump() == 1  # it serves whoever knows its address


def test_redis_pool_flags_keep_results_readable_while_the_producer_is_gone(started, redis_url):
    import redis

    s = started("--no-advertise", "--pool-type", "redis", "--redis-url", redis_url)
    jobs = Jobs(to_dist=s.on)
    fut = jobs.make("kept")
    assert fut.result(timeout=10) == "kept"
    data = pickle.dumps(fut)  # another holder, as if passed along
    # guide.md: the Redis copy is written by a background thread; kill the producer once it is there
    client = redis.Redis.from_url(redis_url)
    try:
        wait_until(lambda: client.keys("mesh:result:*"), timeout=20)
    finally:
        client.close()
    s.stop(signal.SIGKILL)
    assert pickle.loads(data).result(timeout=10) == "kept"  # read from Redis: the producer is gone


def test_state_store_flag_is_where_checkpoints_are_written(started, tmp_path):
    store = tmp_path / "states"
    s = started("--no-advertise", "--state-store", str(store))
    jobs = Jobs(to_dist={**s.on, "checkpoint": True})
    assert jobs.bump() == 1  # API.md: saved after every call that completes, before its reply
    written = [p for p in store.rglob("*") if p.is_file()]
    assert written, f"nothing in {store}"


def test_status_shows_each_agents_queue_depth(started, tmp_path):
    # API.md: "status ADDRESS — that server's agents (class, name, id, queue depth)"
    s = started("--no-advertise")
    gate = str(tmp_path / "open")
    busy = Jobs(to_dist=s.on)
    idle = Jobs(to_dist=s.on)
    assert idle.bump() == 1
    futs = [busy.until.remote(gate)] + [busy.until.remote(gate) for _ in range(3)]  # one runs, three wait

    def rows():
        out = run_cli("status", s.address, "--json")
        assert out.returncode == 0, out.stderr
        return {a["id"]: a for a in json.loads(out.stdout)["agents"]}

    def three_waiting():
        r = rows()
        return max(a["queue"] for a in r.values()) == 3 and r

    assert {row["queue"] for row in wait_until(three_waiting, timeout=20).values()} == {0, 3}
    lines = run_cli("status", s.address).stdout.splitlines()
    head = next(line.split() for line in lines if line.startswith("CLASS"))
    column = head.index("QUEUE")
    depths = sorted(int(line.split()[column]) for line in lines if line.startswith("Jobs"))
    assert depths == [0, 3], lines
    open(gate, "w").close()
    assert all(f.result(timeout=30) for f in futs)
