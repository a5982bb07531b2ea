"""Fuzz every decoder a peer (or a LAN neighbour) can feed: no crash, no exception but the clean ones.

Decode entry points covered (issue 10, point 1):

- ``transport.decode`` (value bodies and buffer frames; ``allow_pickle`` both ways)
- ``transport._framing.split_frames`` (signature + header)
- ``transport._framing.split_batch`` (the body of a ``batch`` message, protocol 1.4)
- ``transport._framing.split_one`` (a one-frame message, protocol 1.5), then ``split_frames`` on its parts
- ``transport._zap.Zap.on_readable`` (ZAP requests), ``transport._sockets.parse_monitor_message``
- ``discovery._record.record_from_dict`` / ``parse_address`` (registry JSON, Redis values),
  ``LocalRegistry.records`` (registry files), ``discovery._mdns_browser.record_from_info`` (mDNS TXT),
  ``discovery._mdns_wire.parse_query`` and ``discovery._responder.MdnsResponder.answer`` (any mDNS datagram)

Random pickles are not fed to ``decode(allow_pickle=True)``: unpickling is trusted by design (only
peers that proved the secret get there), so random and mutated bodies go through
``allow_pickle=False``; the pickle path is checked with crafted frames around valid pickles.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import transport
from mesh import Msg
from transport import _codec
from transport._codec import EXT_BUFREF, EXT_PICKLED, EXT_TUPLE, MAX_EXT_DEPTH, CodecError, decode, encode
from transport._framing import FrameError, pack_batch, pack_header, pack_one, split_batch, split_frames, split_one

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def ext(code: int, payload) -> msgpack.ExtType:
    return msgpack.ExtType(code, msgpack.packb(payload, use_bin_type=True))


def nested_ext(depth: int, code: int = EXT_TUPLE) -> bytes:
    body = msgpack.packb([])
    for _ in range(depth):
        body = msgpack.packb(msgpack.ExtType(code, body))
    return body


def decodes_cleanly(body, buffers=(), allow_pickle=False):
    """decode returns or raises CodecError; nothing else."""
    try:
        decode(body, list(buffers), allow_pickle=allow_pickle)
    except CodecError:
        pass


# -- values ---------------------------------------------------------------------------------

scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20)
)
hashables = st.recursive(scalars, lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3), max_leaves=6)


def containers(inner):
    return (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=4)
        | st.dictionaries(hashables, inner, max_size=3)  # non-plain keys: pickled whole
        | st.sets(hashables, max_size=3)
        | inner.map(lambda c: Msg("agent", c, metadata={"k": c}))
    )


values = st.recursive(scalars, containers, max_leaves=25)


def wrap(value, kinds: list[str]):
    hashable = _hashable(value)
    for kind in kinds:
        if kind == "list":
            value, hashable = [value], False
        elif kind == "tuple":
            value = (value,)
        elif kind == "dict":
            value, hashable = {"k": value}, False
        elif kind == "set":
            value = frozenset([value]) if hashable else (value,)
        elif kind == "msg":
            value, hashable = Msg("a", value), False
    return value


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


@FAST
@given(values)
def test_every_value_round_trips(value):
    body, buffers = encode(value)
    assert decode(body, buffers) == value


@FAST
@given(st.lists(st.sampled_from(["list", "tuple", "dict", "set", "msg"]), min_size=0, max_size=120), scalars)
def test_nesting_of_every_container_round_trips(kinds, leaf):
    value = wrap(leaf, kinds)
    body, buffers = encode(value)
    assert decode(body, buffers) == value


@pytest.mark.parametrize("kind", ["list", "tuple", "dict", "set", "msg", "mixed"])
@pytest.mark.parametrize("depth", [MAX_EXT_DEPTH - 1, MAX_EXT_DEPTH, MAX_EXT_DEPTH + 1, 200, 10_000])
def test_deep_values_round_trip_or_fail_cleanly(kind, depth):
    kinds = ["list", "tuple", "dict", "set", "msg"] * (depth // 5 + 1) if kind == "mixed" else [kind]
    value = wrap(None, (kinds * depth)[:depth])
    try:
        body, buffers = encode(value)
    except CodecError as exc:  # too deep even for pickle: a clean refusal
        assert depth > 200, exc
        return
    assert decode(body, buffers) == value
    if depth <= 200:
        assert decode(*encode(value)) == value


def test_encoder_never_nests_ext_deeper_than_the_decoder_accepts():
    for depth in range(MAX_EXT_DEPTH - 3, MAX_EXT_DEPTH + 4):
        value = wrap(b"x" * (_codec.BUFFER_THRESHOLD + 1), ["tuple"] * depth)  # a BUFREF leaf
        body, buffers = encode(value)
        assert decode(body, buffers, allow_pickle=depth >= _codec.MAX_DEPTH) == value


# -- hostile bodies ---------------------------------------------------------------------------


def test_a_200_deep_tuple_from_a_peer_does_not_crash_the_process():
    """The issue's 937 bytes: before the fix, SIGSEGV. In a child process so a crash is a failure, not the end of the run."""
    code = (
        "import sys, msgpack\n"
        "from transport import decode, CodecError\n"
        "b = msgpack.packb([])\n"
        "for _ in range(200): b = msgpack.packb(msgpack.ExtType(3, b))\n"
        "try:\n    decode(b)\nexcept CodecError as exc:\n    print('refused', exc)\n"
        "b = msgpack.packb([])\n"
        "for _ in range(10000): b = msgpack.packb([msgpack.ExtType(3, b)])\n"
        "try:\n    decode(b)\nexcept CodecError as exc:\n    print('refused', exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.count("refused") == 2


@pytest.mark.parametrize("code", [EXT_TUPLE, EXT_BUFREF, EXT_PICKLED, 7, 127])
@pytest.mark.parametrize("depth", [MAX_EXT_DEPTH + 1, 300, 5000])
def test_ext_nested_in_ext_is_refused(code, depth):
    with pytest.raises(CodecError):
        decode(nested_ext(depth, code), allow_pickle=True)


def test_plain_nesting_is_bounded_by_msgpack():
    with pytest.raises(CodecError):
        decode(b"\x91" * 100_000 + b"\x01")
    assert decode(b"\x91" * 500 + b"\x01") is not None


HUGE = [
    b"\xdd\xff\xff\xff\xff",  # array32 of 4 G items
    b"\xdf\xff\xff\xff\xff",  # map32
    b"\xc6\xff\xff\xff\xff",  # bin32 of 4 GB
    b"\xdb\xff\xff\xff\xff",  # str32
    b"\xc9\xff\xff\xff\xff\x03",  # ext32 of 4 GB
    b"\xc9\x7f\xff\xff\xff\x01" + b"\x00" * 10,
    b"\xdd\x00\x01\x00\x00" + b"\xc0" * 10,
]


@pytest.mark.parametrize("body", HUGE)
def test_huge_declared_lengths_fail_without_allocating(body):
    with pytest.raises(CodecError):
        decode(body, allow_pickle=True)


BOGUS_REFS = [[-1, 0], [1, 0], [True, 0], [0.0, 0], ["0", 0], [None, 0], [2**40, 0], [0, 3], [0, -1], [0], [0, 0, 0], 5, "x", {}]


@pytest.mark.parametrize("ref", BOGUS_REFS, ids=repr)
def test_bogus_buffer_references(ref):
    payload = msgpack.packb(ref) if not isinstance(ref, int) else msgpack.packb(ref)
    with pytest.raises(CodecError):
        decode(msgpack.packb(msgpack.ExtType(EXT_BUFREF, payload)), [b"abc"])


def test_a_buffer_is_referenced_once_only():
    """Else 6 bytes of body copy a whole frame: a 32 MB message could ask for terabytes."""
    one = ext(EXT_BUFREF, [0, 0])
    assert decode(msgpack.packb([one]), [b"abc"]) == [b"abc"]
    with pytest.raises(CodecError, match="twice"):
        decode(msgpack.packb([one] * 1000), [b"x" * 1000])
    oob = pickle.dumps(pickle.PickleBuffer(b"abc"), protocol=5, buffer_callback=lambda b: False)
    assert bytes(decode(msgpack.packb(ext(EXT_PICKLED, [oob, [0]])), [b"abc"], allow_pickle=True)) == b"abc"
    with pytest.raises(CodecError, match="twice"):  # a pickle's out-of-band buffer counts as a reference too
        decode(msgpack.packb([one, ext(EXT_PICKLED, [oob, [0]])]), [b"abc"], allow_pickle=True)


@pytest.mark.parametrize(
    "payload",
    [5, [b"junk", []], [b"\x80\x05N.", [7]], [b"\x80\x05N.", "x"], [b"\x80\x05N."], ["str", []], [b"\x80\x05N.", [0, 0]]],
    ids=repr,
)
def test_malformed_pickled_values(payload):
    with pytest.raises(CodecError):
        decode(msgpack.packb(ext(EXT_PICKLED, payload)), [b"abc"], allow_pickle=True)
    with pytest.raises(CodecError):
        decode(msgpack.packb(ext(EXT_PICKLED, payload)), [b"abc"], allow_pickle=False)


@pytest.mark.parametrize("payload", [{"a": 1}, 5, "abc", None], ids=repr)
def test_a_tuple_is_an_array(payload):
    with pytest.raises(CodecError):
        decode(msgpack.packb(ext(EXT_TUPLE, payload)))


def test_ext_inside_a_buffer_reference_or_pickle_header_is_refused():
    inner = msgpack.packb([msgpack.ExtType(EXT_TUPLE, b"\x90"), 0])
    with pytest.raises(CodecError):
        decode(msgpack.packb(msgpack.ExtType(EXT_BUFREF, inner)), [b"abc"])


@FAST
@given(st.binary(max_size=300), st.lists(st.binary(max_size=8), max_size=3))
def test_random_bytes(body, buffers):
    decodes_cleanly(body, buffers)


ext_bytes = st.recursive(
    st.binary(max_size=12).map(lambda b: msgpack.packb(b)) | st.just(b"\x90") | st.just(b"\xc0"),
    lambda inner: st.builds(
        lambda code, data, wrap_list: msgpack.packb([msgpack.ExtType(code, data)] if wrap_list else msgpack.ExtType(code, data)),
        st.sampled_from([EXT_TUPLE, EXT_BUFREF, EXT_PICKLED, 0, 4, 127]), inner, st.booleans(),
    ),
    max_leaves=60,
)


@FAST
@given(ext_bytes, st.lists(st.binary(max_size=8), max_size=3))
def test_ext_types_nested_in_ext_types(body, buffers):
    decodes_cleanly(body, buffers)


@FAST
@given(values, st.data())
def test_mutated_bodies(value, data):
    body, buffers = encode(value)
    raw = bytearray(body)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        at = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[at] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del raw[at:]
        elif op == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=6))
        elif raw:
            raw[at:at] = raw[at:]
    decodes_cleanly(bytes(raw), buffers + [b"y" * 3])


def test_decode_accepts_memoryview_and_zmq_frames():
    import zmq

    body, buffers = encode([b"x" * 100_000, (1, 2)])
    assert decode(memoryview(body), [zmq.Frame(bytes(b)) for b in buffers]) == [b"x" * 100_000, (1, 2)]
    with pytest.raises(CodecError):
        decode(zmq.Frame(b"\xc1"))


# -- framing, ZAP, monitor, small control values ---------------------------------------------

SIG = transport.SIGNATURE
plain = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8) | st.binary(max_size=8)
frame = st.binary(max_size=40) | st.builds(
    msgpack.packb, st.dictionaries(st.sampled_from(["op", "id", "re", "x"]) | st.text(max_size=4), plain, max_size=4)
)


@FAST
@given(st.lists(frame, max_size=6), st.booleans())
def test_split_frames(frames, signed):
    if signed:
        frames = [SIG, *frames]
    try:
        header, body, buffers = split_frames(frames)
    except FrameError:
        return
    assert isinstance(header, dict) and isinstance(header["op"], str)
    decodes_cleanly(body, buffers)


@FAST
@given(st.binary(max_size=300), st.booleans(), st.binary(max_size=40))
def test_split_one(tail, signed, body):
    # any frame: None or (header, body) parts, which split_frames then checks as the server does
    frame = (SIG + tail) if signed else tail
    parts = split_one(frame)
    if parts is not None:
        header, rest = parts
        assert type(header) is bytes and type(rest) is bytes and rest
        try:
            head, value, _ = split_frames([SIG, header, rest])
        except FrameError:
            pass
        else:
            assert isinstance(head, dict) and isinstance(head["op"], str)
            decodes_cleanly(value)
    packed = pack_header({"op": "call", "id": 1})
    assert split_one(pack_one(packed, body)) == ((packed, body) if body else None)  # no body: not one


def _split_batch_cleanly(body) -> None:
    """split_batch returns (header, body bin) items and FrameErrors, or raises FrameError; nothing else."""
    try:
        items = split_batch(body)
    except FrameError:
        return
    for item in items:
        if isinstance(item, FrameError):
            continue
        header, item_body = item
        assert isinstance(header, dict) and isinstance(header["op"], str) and header["op"] != "batch"
        assert type(item_body) is bytes
        decodes_cleanly(item_body)


@FAST
@given(st.binary(max_size=300))
def test_split_batch_random_bytes(body):
    _split_batch_cleanly(body)


batch_header = st.dictionaries(st.sampled_from(["op", "id", "re", "x"]) | st.text(max_size=4), plain, max_size=4)


@FAST
@given(st.lists(st.tuples(batch_header, st.binary(max_size=20)), max_size=12), st.data())
def test_split_batch_mutated(items, data):
    parts = []
    for header, body in items:
        parts += [pack_header(header), body]
    body = bytearray(pack_batch(parts))
    _split_batch_cleanly(bytes(body))
    for _ in range(data.draw(st.integers(0, 6))):  # flip, cut or grow some bytes
        if not body:
            break
        i = data.draw(st.integers(0, len(body) - 1))
        body[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        body = body[: data.draw(st.integers(0, len(body)))]
    _split_batch_cleanly(bytes(body))


@FAST
@given(st.lists(st.one_of(batch_header, plain, st.lists(plain, max_size=3)), max_size=10))
def test_split_batch_any_msgpack_array(values):
    _split_batch_cleanly(msgpack.packb(values, use_bin_type=True))


@pytest.mark.parametrize(
    "header",
    [b"\x91" * 60_000 + b"\x01", b"\x81\xa2op" + nested_ext(40), b"\xdf\xff\xff\xff\xff", b"\xc1", b"\x81\x90\x01", b"x" * 70_000],
    ids=["deep", "ext", "huge-map", "reserved", "list-key", "too-big"],
)
def test_hostile_headers(header):
    with pytest.raises(FrameError):
        split_frames([SIG, header, b"\xc0"])


class _FakeZap:
    def __init__(self, requests):
        self.requests = list(requests)
        self.replies = []

    def recv_multipart(self, flags=0):
        import zmq

        if not self.requests:
            raise zmq.Again()
        return self.requests.pop(0)

    def send_multipart(self, frames):
        self.replies.append(frames)


@FAST
@given(st.lists(st.lists(st.binary(max_size=40), max_size=9), max_size=5))
def test_zap_requests(requests):
    from transport._zap import Zap

    zap = Zap(warn=lambda *args: None)
    zap.sock = _FakeZap(requests)  # type: ignore[assignment]
    zap.keys = {b"mesh-x": b"k" * 32}
    zap.on_readable()
    assert len(zap.sock.replies) == len(requests)
    for reply in zap.sock.replies:
        assert reply[2] in (b"200", b"400", b"500") and len(reply) == 6
        assert reply[2] != b"200"  # nothing random is accepted


def test_zap_accepts_exactly_the_derived_key():
    from transport._zap import Zap

    zap = Zap(warn=lambda *args: None)
    good = [b"1.0", b"7", b"mesh-x", b"1.2.3.4", b"", b"CURVE", b"k" * 32]
    zap.sock = _FakeZap([good, good[:6] + [b"j" * 32], [*good[:5], b"NULL", b"k" * 32]])  # type: ignore[assignment]
    zap.keys = {b"mesh-x": b"k" * 32}
    zap.on_readable()
    assert [r[2] for r in zap.sock.replies] == [b"200", b"400", b"400"]


@FAST
@given(st.lists(st.binary(max_size=10), max_size=3))
def test_monitor_messages(frames):
    from transport._sockets import parse_monitor_message

    try:
        msg = parse_monitor_message(frames)
    except ValueError:
        return
    assert set(msg) == {"event", "value", "endpoint"}


# -- discovery ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=5),
    max_leaves=20,
)
record_like = st.fixed_dictionaries(
    {},
    optional={
        "v": json_values, "name": st.text(max_size=70) | json_values, "host": st.sampled_from(["127.0.0.1", "::1", "h.local", "[::1]", "a:b", "*", ""]) | st.text(max_size=30) | json_values,
        "port": st.integers(-5, 70_000) | json_values, "cap": json_values | st.integers(), "auth": json_values,
        "py": json_values, "proto": json_values, "pid": json_values | st.integers(), "start": json_values,
        "addrs": st.lists(st.text(max_size=20), max_size=3) | json_values,
    },
)


@settings(max_examples=80, deadline=None)
@given(record_like | json_values)
def test_record_from_dict(data):
    from discovery._record import ServerRecord, record_from_dict

    try:
        rec = record_from_dict(data, "local")
    except ValueError:
        return
    assert isinstance(rec, ServerRecord) and 0 < rec.port < 65536


@FAST
@given(st.text(max_size=60))
def test_parse_address(text):
    from discovery._record import parse_address

    for default in (None, 12001):
        try:
            host, port = parse_address(text, default)
        except ValueError:
            continue
        assert host and 0 < port < 65536


@pytest.mark.parametrize(
    "content",
    [b"[" * 10_000, b'{"a":' * 5000, b"\xff\xfe", b"{}", b'{"host": "127.0.0.1", "port": 1e400}', b"1" * 5000, b""],
    ids=["deep-list", "deep-map", "not-utf8", "empty-map", "inf", "long-int", "empty"],
)
def test_local_registry_skips_hostile_files(tmp_path, content):
    """A registry file nested 10,000 deep raised RecursionError out of records() (json.loads)."""
    from discovery._local import LocalRegistry

    (tmp_path / "evil.json").write_bytes(content)
    assert LocalRegistry(tmp_path).records() == []


@FAST
@given(st.dictionaries(st.binary(max_size=12), st.none() | st.binary(max_size=40), max_size=8) | st.binary(max_size=200))
def test_mdns_txt_records(props):
    """A TXT record from any LAN neighbour gives a record or None, never an exception."""
    from zeroconf import ServiceInfo

    from discovery._mdns_browser import record_from_info
    from discovery._record import ServerRecord

    try:
        info = ServiceInfo(
            "_agentmesh._tcp.local.", "x._agentmesh._tcp.local.", port=12001, properties=props,
            addresses=[bytes([127, 0, 0, 1])],
        )
    except Exception:  # zeroconf itself refused to build it: never reaches us
        return
    rec = record_from_info(info)
    assert rec is None or isinstance(rec, ServerRecord)


def test_json_numbers_that_python_cannot_read():
    from discovery._record import record_from_dict

    for text in ['{"host": "h", "port": NaN}', '{"host": "h", "port": 12001, "cap": Infinity}']:
        with pytest.raises(ValueError):
            record_from_dict(json.loads(text), "redis")


# -- the plain mDNS responder (discovery._responder): any datagram from the LAN ---------------

def _responder_and_iface():
    from discovery._mdns_socket import Bucket as _Bucket
    from discovery._responder import MdnsResponder

    class Iface:
        index, address = 1, "127.0.0.1"

        def __init__(self):
            self.last_sent, self.unicast, self.sent = {}, _Bucket(20.0), []

        def send(self, packet, to=("224.0.0.251", 5353)):
            self.sent.append(packet)

    props = {"txtvers": "1", "name": "f", "cap": "1"}
    return MdnsResponder("_agentmesh._tcp.local.", "f", 1, props, ["127.0.0.1"], [(1, "127.0.0.1")]), Iface()


def _mdns_query_seed():
    from discovery._mdns_wire import PTR, SRV, Writer

    w = Writer(9, flags=0)
    w.question("_agentmesh._tcp.local.", PTR)
    w.question("f._agentmesh._tcp.local.", SRV)
    w.record(1, "_agentmesh._tcp.local.", PTR, 4500, "f._agentmesh._tcp.local.")
    return w.bytes()


def _answers_cleanly(data: bytes, port: int) -> None:
    """parse_query and answer return or raise ValueError; whatever is sent is a valid DNS response."""
    from discovery._mdns_wire import parse_query

    responder, iface = _responder_and_iface()
    try:
        parse_query(data)
        responder.answer(data, ("127.0.0.1", port), iface)
    except ValueError:
        return
    for packet in iface.sent:
        assert packet[2] & 0x80 and parse_query(packet) is None  # a response (QR set), itself readable


@FAST
@given(st.binary(max_size=600), st.sampled_from([5353, 40000]))
def test_mdns_responder_random_datagrams(data, port):
    _answers_cleanly(data, port)


@FAST
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=8),
       st.sampled_from([5353, 40000]))
def test_mdns_responder_mutated_queries(edits, port):
    data = bytearray(_mdns_query_seed())
    for pos, byte in edits:
        if pos < len(data):
            data[pos] = byte
    _answers_cleanly(bytes(data), port)


def test_mdns_responder_truncations_of_a_valid_query():
    data = _mdns_query_seed()
    for end in range(len(data) + 1):
        _answers_cleanly(data[:end], 40000)
