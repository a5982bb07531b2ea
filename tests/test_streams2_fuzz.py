"""Inline batches (plain items in one msgpack array): the decoder of peer bytes never raises anything
but ValueError, readers that did not ask get the framed form, and a stream whose items change
kind midway (plain, then a tuple, then plain) reads every item in order."""

from __future__ import annotations

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mesh
from mesh import RpcMeta, stream_func
from mesh._core import stream_items, wire
from mesh.server._streams import Streams

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

plain = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False),
                  st.text(max_size=20), st.binary(max_size=20))


@FAST
@given(st.lists(plain, max_size=50))
def test_inline_batches_round_trip(values):
    bodies = [msgpack.packb(v, use_bin_type=True) for v in values]
    assert stream_items.unpack_inline(stream_items.pack_inline(bodies)) == values


def test_inline_batches_of_every_size_class_round_trip():
    for n in (0, 15, 16, 65535, 65536):
        bodies = [b"\x01"] * n
        assert len(stream_items.unpack_inline(stream_items.pack_inline(bodies))) == n


@FAST
@given(st.binary(max_size=200))
def test_unpack_inline_of_any_bytes_is_a_list_or_a_value_error(data):
    try:
        out = stream_items.unpack_inline(data)
    except ValueError:
        return
    assert type(out) is list


@FAST
@given(st.lists(plain, max_size=5), st.sampled_from([msgpack.ExtType(1, b"x"), {"a": 1}, [[1] * 3]]))
def test_unpack_inline_refuses_extensions_and_maps(values, odd):
    data = msgpack.packb([*values, odd], use_bin_type=True)
    if isinstance(odd, list):  # nested arrays are plain values: accepted as they are
        assert stream_items.unpack_inline(data)[-1] == odd
        return
    try:
        stream_items.unpack_inline(data)
    except ValueError:
        return
    raise AssertionError("accepted an extension type or a map")


def test_a_reader_that_did_not_ask_gets_framed_batches_and_one_that_asked_inline_ones():
    streams = Streams()
    streams.open("t")
    state = streams.get("t")
    got: dict[str, list] = {"old": [], "new": []}
    streams.subscribe({"op": wire.STREAM, "task": "t", "ref": "old"}, got["old"].append)
    streams.subscribe({"op": wire.STREAM, "task": "t", "ref": "new", "inline": 1}, got["new"].append)
    for i in range(5):
        streams.put(state, i)
    streams.finish("t", ({"op": wire.OK}, wire.NIL, []))
    old = [p for p in got["old"] if p[0].get("more")]
    new = [p for p in got["new"] if p[0].get("more")]
    assert old and all("inline" not in p[0] for p in old)
    assert new and all(p[0].get("inline") == 1 for p in new)
    assert [msgpack.unpackb(b) for p in old for b, _ in stream_items.unpack(p[1], p[2])] == list(range(5))
    assert [v for p in new for v in stream_items.unpack_inline(p[1])] == list(range(5))


class Mixed(metaclass=RpcMeta):
    @stream_func
    def items(self, n: int):
        for i in range(n):
            yield i
        yield ("a", 1)  # not plain: from here on, batches are framed
        for i in range(n):
            yield str(i)


def test_a_stream_whose_items_change_kind_reads_every_item_in_order(server):
    m = Mixed(to_dist={"host": server.host, "port": server.port})
    n = 300
    want = [*range(n), ("a", 1), *(str(i) for i in range(n))]
    assert m.items(n).result(timeout=20) == want
    assert list(m.items(n)) == want
    assert isinstance(m.items(1), mesh.Stream)


@FAST
@given(st.binary(max_size=100), st.integers(-2, 3))
def test_a_reader_given_a_malformed_inline_part_raises_a_mesh_error(body, at):
    reader = _fake_reader()
    try:
        reader._take(({"op": "ok", "more": 1, "at": at, "inline": 1}, body, []))
    except mesh.MeshError:
        return
    assert reader.pending == sum(len(batch) for batch in reader.items)


def _fake_reader():
    """A reader without a connection: what ``Reader._take`` needs."""
    import collections
    import threading

    import transport
    from mesh.client._stream_reader import Reader

    r = Reader.__new__(Reader)
    r.address, r.task, r.ref = "tcp://127.0.0.1:1", "t", "r"
    r.cond = threading.Condition(threading.Lock())
    r.parts, r.items = collections.deque(), collections.deque()
    r.consumed = r.acked = 0
    r.waiter, r.finished = None, True  # finished: never acks, never closes (no client)
    r.fut = transport.ReplyFuture()
    r.fut.set_result(({"op": wire.OK, "end": 0}, wire.NIL, []))
    return r
