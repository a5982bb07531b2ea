"""Streams passed on: read by another agent on another server straight from the producer, from the
first item, while still produced, the caller relaying nothing; several readers; a reader whose
process is killed lets the producer close its generator."""

from __future__ import annotations

import base64
import subprocess
import sys
import time

import cloudpickle

import mesh
from conftest import wait_until
from mesh import AgentBase, Msg, RpcMeta, stream_func
from mesh._core import runtime


class Source(metaclass=RpcMeta):
    def __init__(self) -> None:
        self.closed = 0

    @stream_func
    def chunks(self, n: int, size: int, pause: float = 0.0):
        for i in range(n):
            yield (i, time.time(), bytes([i % 256]) * size)
            if pause:
                time.sleep(pause)

    @stream_func
    def forever(self):
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            self.closed += 1


class Sink(metaclass=RpcMeta):
    def read(self, stream) -> list:
        """(index, when it was made, when it was read here, size) of each item."""
        return [(i, made, time.time(), len(data)) for i, made, data in stream]

    def count(self, stream) -> int:
        return len(stream.result())


class Talker(AgentBase):
    @stream_func
    def reply(self, x: Msg | None = None):
        for word in ("to", "ken", "s"):
            time.sleep(0.05)
            yield Msg(self.name, word)


class Relay(AgentBase):
    """Reads the chunks of the placeholder it is given (a streaming reply), and its whole message."""

    def reply(self, x: Msg | None = None) -> Msg:
        chunks = [c.content for c in x] if hasattr(x, "__iter__") else None
        return Msg(self.name, {"chunks": chunks, "whole": x.content})


def test_a_stream_passed_to_another_server_is_read_from_the_producer_while_it_runs(spawn_server):
    a, b = spawn_server(port=0), spawn_server(port=0)
    src = Source(to_dist={"host": a.host, "port": a.port})
    sink = Sink(to_dist={"host": b.host, "port": b.port})
    node = runtime.current().node
    before = node.received_bytes
    s = src.chunks(6, 100_000, 0.3)  # 600 kB over ~1.8 s
    out = sink.read(s)  # the Stream travels as a reference; b subscribes to a
    assert [o[0] for o in out] == list(range(6)) and all(o[3] == 100_000 for o in out)
    first_read, last_made = out[0][2], out[-1][1]
    assert first_read < last_made - 0.5  # read on b while a still produced
    assert node.received_bytes - before < 100_000  # the caller relayed none of the items
    assert s.result(timeout=20)[-1][0] == 5  # and it can still read them all itself, from the start


def test_several_readers_on_several_servers_each_get_every_item(spawn_server):
    a, b, c = spawn_server(port=0), spawn_server(port=0), spawn_server(port=0)
    src = Source(to_dist={"host": a.host, "port": a.port})
    sinks = [Sink(to_dist={"host": srv.host, "port": srv.port}) for srv in (b, c)]
    s = src.chunks(3000, 10)
    counts = [sink.count.remote(s) for sink in sinks]
    del s  # the caller lets go at once: its copies passed on still hold the items
    assert [f.result(timeout=30) for f in counts] == [3000, 3000]


def test_a_streaming_reply_passed_on_is_iterated_and_read_whole_there(spawn_server):
    a, b = spawn_server(port=0), spawn_server(port=0)
    talker = Talker("t", to_dist={"host": a.host, "port": a.port})
    relay = Relay("r", to_dist={"host": b.host, "port": b.port})
    x = relay(talker(Msg("user", "go")))
    assert x.content == {"chunks": ["to", "ken", "s"], "whole": "tokens"}


def test_a_reader_whose_process_is_killed_lets_the_producer_close_the_generator(spawn_server):
    srv = spawn_server(port=0, lease_ttl=1.0)
    src = Source(to_dist={"host": srv.host, "port": srv.port})
    blob = base64.b64encode(cloudpickle.dumps(src)).decode()
    code = (
        "import base64, pickle, sys, mesh\n"
        f"src = pickle.loads(base64.b64decode({blob!r}))\n"
        "it = iter(src.forever())\n"
        "assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]\n"
        "print('ready', flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert src.closed == 0  # paused by back-pressure, not closed, while its reader lives
        proc.kill()
        proc.wait(10)
        # its lease runs out (1 s): no holder is left, and the never-ending generator is closed
        wait_until(lambda: src.closed == 1, timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert isinstance(src.forever(), mesh.Stream)  # the object serves on
