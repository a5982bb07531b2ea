"""Issue 13's bad input, re-checked: a generator faster than its reader is held by the byte bound
(memory per stream), and Ctrl-C in a client's ``for`` over a stream stops the generator."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid

import mesh
from conftest import wait_until
from mesh import RpcMeta, stream_func

TESTS = __file__.rsplit("/", 1)[0]


class Big(metaclass=RpcMeta):
    def __init__(self) -> None:
        self.made = 0

    @stream_func
    def chunks(self, size: int):
        while True:
            self.made += 1
            yield b"x" * size


def test_a_generator_is_held_by_the_byte_bound_of_its_slowest_reader(server):
    streams = server._servicer.streams
    streams.window_bytes = 64 * 1024  # the item window (16384) is far away: only bytes bound it
    big = Big(to_dist={"host": server.host, "port": server.port})
    stream = big.chunks(1000)
    it = iter(stream)
    assert len(next(it)) == 1000
    per_item = 1000 + 64 + 3  # the item, the bookkeeping, its msgpack header
    bound = 64 * 1024 // per_item
    wait_until(lambda: big.made >= bound - 1, timeout=10)
    time.sleep(0.3)  # (not synchronisation: checks that nothing more is made meanwhile)
    assert big.made <= 2 * bound + 2, (big.made, bound)  # a window ahead of what was read, plus one batch
    for _ in range(6 * bound):
        next(it)
    wait_until(lambda: big.made >= 4 * bound, timeout=10)  # reading made room
    assert stream.cancel() is True


_READING = """
import sys
sys.path.insert(0, {tests!r})
import mesh
from test_streams2_bounds import Ticker
t = Ticker(to_dist={conf})
for i, item in enumerate(t.ticks()):
    if i == 3:
        print("ready", flush=True)
"""


class Ticker(metaclass=RpcMeta):
    def __init__(self) -> None:
        self.closed = 0

    @stream_func
    def ticks(self):
        try:
            while True:
                yield time.time()
                time.sleep(0.01)
        finally:
            self.closed += 1


def test_ctrl_c_in_a_for_over_a_stream_stops_its_generator(spawn_server):
    srv = spawn_server()
    name = "ticker-" + uuid.uuid4().hex[:8]
    # detached: the client's exit does not delete it, so only the Ctrl-C cancel stops its generator
    conf = {"host": srv.host, "port": srv.port, "name": name, "detached": True}
    proc = subprocess.Popen([sys.executable, "-c", _READING.format(tests=TESTS, conf=conf)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
        assert "KeyboardInterrupt" in proc.stderr.read()
        ticker = mesh.get(name, srv.host, srv.port)
        wait_until(lambda: ticker.closed == 1, timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
