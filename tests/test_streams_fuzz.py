"""Fuzz the stream decoders of peer bytes and the server's stream ops: only clean errors, never a crash.

- ``mesh._core.stream_items.unpack`` (a batch of items a producer pushed): returns or raises ValueError;
- the reader's handling of a part (``_Reader._take``): a ``MeshError`` for anything malformed;
- the server's stream ops (``stream``, ``stream_ack``, ``stream_stop``) with any header: the header
  check answers ``badrequest`` or the op is served; nothing raises out of ``Servicer.handle``.
"""

from __future__ import annotations

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import transport

from mesh._core import stream_items, wire
from mesh._errors import MeshError
from mesh.server._streams import Streams

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12,
)


def test_pack_and_unpack_round_trip():
    items = [(b"\x01", []), (b"\x02", [b"a" * 10, b"b"]), (b"\x03", [])]
    body, buffers = stream_items.pack(items)
    assert stream_items.unpack(body, buffers) == items
    body, buffers = stream_items.pack([(b"x", []), (b"y", [])])
    assert buffers == [] and stream_items.unpack(body, []) == [(b"x", []), (b"y", [])]


@FAST
@given(st.binary(max_size=200), st.lists(st.binary(max_size=8), max_size=4))
def test_unpack_of_random_bytes_is_clean(body, buffers):
    try:
        stream_items.unpack(body, buffers)
    except ValueError:
        pass


@FAST
@given(values, st.lists(st.binary(max_size=8), max_size=4))
def test_unpack_of_random_msgpack_is_clean(value, buffers):
    try:
        out = stream_items.unpack(msgpack.packb(value, use_bin_type=True), buffers)
    except ValueError:
        return
    assert all(type(b) is bytes and type(bufs) is list for b, bufs in out)
    assert sum(len(bufs) for _, bufs in out) == len(buffers)


class _FakeReader:
    """A reader without a connection: what ``_Reader._take`` and ``next`` need."""

    def __init__(self):
        import collections
        import threading

        from mesh.client._stream import _Reader

        self.cls = _Reader
        r = _Reader.__new__(_Reader)
        r.address, r.task, r.ref = "tcp://127.0.0.1:1", "t", "r"
        r.cond = threading.Condition(threading.Lock())
        r.parts, r.items = collections.deque(), collections.deque()
        r.consumed = r.acked = 0
        r.waiter, r.finished = None, True  # finished: never acks, never closes (no client)
        r.fut = transport.ReplyFuture()
        r.fut.set_result(({"op": wire.OK, "end": 0}, wire.NIL, []))
        self.reader = r


@FAST
@given(values, st.lists(st.binary(max_size=8), max_size=3), values)
def test_a_malformed_part_gives_a_mesh_error(body_value, buffers, at):
    reader = _FakeReader().reader
    reader.finished = True
    try:
        reader._take(({"op": "ok", "more": 1, "at": at}, msgpack.packb(body_value, use_bin_type=True), buffers))
    except MeshError:
        return
    # accepted: every item is a (body, buffers) pair, and decoding it is transport.decode's (fuzzed apart)
    assert all(type(b) is bytes for b, _ in reader.items)


headers = st.fixed_dictionaries(
    {"op": st.sampled_from([wire.STREAM, wire.STREAM_ACK, wire.STREAM_STOP])},
    optional={
        "id": st.integers(-5, 2**40) | st.none() | st.text(max_size=3),
        "task": st.text(max_size=4) | st.integers() | st.none() | st.binary(max_size=3),
        "ref": st.text(max_size=4) | st.integers() | st.lists(st.integers(), max_size=2),
        "from": st.integers(-(2**70), 2**70) | st.text(max_size=2) | st.floats() | st.booleans(),
        "at": st.integers(-(2**70), 2**70) | st.text(max_size=2) | st.none() | st.booleans(),
        "close": st.integers(-3, 3) | st.text(max_size=2) | st.booleans(),
        "sess": st.text(max_size=4) | st.integers(),
        "inst": st.text(max_size=4) | st.integers(),
    },
)


def _servicer():
    from mesh.server._classes import ClassResolver
    from mesh.server._dispatch import Servicer
    from mesh.server._store import LocalPool

    return Servicer(name="fuzz", capacity=1, pool=LocalPool(), resolver=ClassResolver(()), max_message_size=1 << 20,
                    on_stop=lambda: None)


_SERVICER = None


class _Router:
    def __init__(self):
        self.replies = []

    def reply(self, identity, header, body=b"\xc0", buffers=()):
        self.replies.append(header)


@FAST
@given(st.lists(headers, min_size=1, max_size=6))
def test_the_stream_ops_never_break_the_server(seq):
    global _SERVICER
    if _SERVICER is None:
        _SERVICER = _servicer()
        _SERVICER.streams.open("t")  # a known stream too, so that acks and stops reach it
    router = _Router()
    for header in seq:
        _SERVICER.handle(router, b"id", dict(header), wire.NIL, [])
    for reply in router.replies:
        assert reply["op"] in (wire.OK, wire.ERR)
        assert reply.get("kind") != wire.K_INTERNAL, reply


def test_subscribe_ack_and_end_on_a_bare_registry():
    streams = Streams(window=4)
    streams.open("t")
    got = []
    streams.subscribe({"task": "t", "ref": "r", "from": 0}, got.append)
    state = streams.get("t")
    for i in range(3):
        streams.put(state, i)
    assert [e[0].get("at") for e in got] == [0, 1, 2]  # pushed at once, one batch each (no I/O thread here)
    assert stream_items.unpack(got[0][1], got[0][2]) == [(msgpack.packb(0), [])]
    assert streams.put(state, 3) is True  # a window (4) ahead of the reader: the generator must wait
    streams.ack({"task": "t", "ref": "r", "at": 4})
    assert not state.full(streams.window, streams.window_bytes)
    streams.finish("t", ({"op": wire.OK}, msgpack.packb(4), []))
    assert got[-1][0] == {"op": wire.OK, "end": 4}
    assert streams.stop("t") is False  # already ended
    late = []
    streams.subscribe({"task": "t", "ref": "r2", "from": 2}, late.append)  # a later reader, from item 2
    assert [e[0].get("at") for e in late] == [2, None] and late[-1][0]["end"] == 4
    streams.drop("t")
    gone = []
    streams.subscribe({"task": "t", "ref": "r3"}, gone.append)
    assert gone[0][0]["kind"] == wire.K_EXPIRED
