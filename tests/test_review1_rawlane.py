"""review1: the raw sync lane (FastLane.raw / _learn) parses peers' header bytes before the usual
path's size check (transport._framing.MAX_HEADER_BYTES)."""

from __future__ import annotations

import gc

import msgpack
import zmq

import transport
from mesh import RpcMeta
from mesh.server import _inline_fast
from transport._framing import MAX_HEADER_BYTES


class Echo(metaclass=RpcMeta):
    def echo(self, x):
        return x


def test_an_oversized_header_is_never_kept_by_the_raw_lane(server) -> None:
    obj = Echo(to_dist={"host": server.host, "port": server.port})
    assert obj.echo(1) == 1  # a plain sync call: the ROUTER's raw hook is set from now on
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.rcvtimeo = 10000
    sock.connect(server.address)
    try:
        big = "x" * (4 * MAX_HEADER_BYTES)
        head = msgpack.packb({"op": "call", "obj": obj._mesh_id, "m": "echo", "pad": big, "chain": "c", "id": 3})
        sock.send_multipart([transport.SIGNATURE, head, msgpack.packb([[1], {}])])
        reply = sock.recv_multipart()
        assert msgpack.unpackb(reply[1])["op"] == "err"  # refused by the usual path (too big a header)
    finally:
        sock.close(0)
    lanes = [o for o in gc.get_objects() if type(o) is _inline_fast.FastLane]
    longest = max((len(k) for lane in lanes for k in lane.templates), default=0)
    assert longest <= MAX_HEADER_BYTES, f"a {longest}-byte header prefix is kept in FastLane.templates"


class Fat(metaclass=RpcMeta):
    def __init__(self) -> None:
        self.blob = bytearray(1 << 20)

    def echo(self, x):
        return x


def _fat_alive() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is Fat)


def test_a_deleted_object_is_not_kept_by_the_sync_fast_lanes(server) -> None:
    import mesh

    fat = Fat(to_dist={"host": server.host, "port": server.port})
    other = Echo(to_dist={"host": server.host, "port": server.port})
    for i in range(300):  # past the inline warm-up: the raw lane learns the layout and serves it
        assert fat.echo(i) == i
    mesh.delete(fat)
    del fat
    for i in range(300):  # another object's calls: the lane's per-call fields (hooks.actor) move on
        assert other.echo(i) == i
    for _ in range(3):
        gc.collect()
    assert _fat_alive() == 0, "the deleted object is still alive on its server"
