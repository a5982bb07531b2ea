"""A large binary value one or two levels down in a list / dict (``{"data": big}``, a call's
``[[big], {}]``) travels as a buffer frame without being packed (copied) first for nothing, once
the codec has seen one; small values are never scanned until then, and the wire is unchanged."""

from __future__ import annotations

import pytest

import transport
from transport import _codec

BIG = b"\x01" * (1 << 20)


class _Counting:
    """Stands in for this thread's strict packer: counts the packs it is asked for."""

    def __init__(self, real) -> None:
        self.real = real
        self.packs = 0

    def pack(self, value):
        self.packs += 1
        return self.real.pack(value)


@pytest.fixture
def packer(monkeypatch: pytest.MonkeyPatch):
    transport.encode(0)  # this thread's packer exists
    counting = _Counting(_codec._local.strict)
    monkeypatch.setattr(_codec._local, "strict", counting)
    monkeypatch.setattr(_codec, "_scan_left", 0)
    yield counting
    _codec._local.strict = counting.real


@pytest.mark.parametrize("make", [
    lambda b: [b], lambda b: {"data": b}, lambda b: [[b], {}], lambda b: [[1], {"k": b}],
    lambda b: {"a": [1, b], "b": "x"}, lambda b: [b, (1, 2)],
], ids=["list", "dict", "args", "kwargs", "dict-list", "with-tuple"])
def test_nested_big_values_skip_the_strict_pack_once_seen(packer, make) -> None:
    value = make(BIG)
    body1, bufs1 = transport.encode(value)  # not armed yet: packed first (as before), then walked
    first = packer.packs
    _codec._scan_left = _codec._SCAN_SPAN  # (armed by the first, unless a tuple failed its pack)
    body2, bufs2 = transport.encode(value)
    assert packer.packs == first  # scanned, found, walked: never packed
    assert body2 == body1 and len(body2) < 100  # the same wire either way
    assert len(bufs2) == 1 and bufs2[0] is BIG  # the value itself: zero-copy
    assert transport.decode(body2, bufs2) == value


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_other_binary_kinds_keep_their_kind(packer, kind) -> None:
    _codec._scan_left = _codec._SCAN_SPAN
    big = kind(BIG)
    body, bufs = transport.encode({"data": big})
    assert packer.packs == 0 and bufs[0] is big
    got = transport.decode(body, bufs)["data"]
    assert type(got) is kind and bytes(got) == BIG


def test_small_values_are_not_scanned_until_a_big_one_was_packed(packer, monkeypatch) -> None:
    scans = []
    real = _codec._big_inside
    monkeypatch.setattr(_codec, "_big_inside", lambda v, t: scans.append(v) or real(v, t))
    for value in ([1, "a"], {"k": [1, 2]}, [[1], {}], "s", 3):
        transport.encode(value)
    assert scans == [] and _codec._scan_left == 0
    transport.encode([BIG])  # packed for nothing: arms the scan
    assert _codec._scan_left == _codec._SCAN_SPAN
    for _ in range(_codec._SCAN_SPAN):
        assert transport.decode(*transport.encode([[1, 2], {"k": "v"}])) == [[1, 2], {"k": "v"}]
    assert len(scans) == _codec._SCAN_SPAN and _codec._scan_left == 0  # none found: it stops looking
    transport.encode([1, 2])
    assert len(scans) == _codec._SCAN_SPAN


def test_long_containers_and_deeper_values_still_round_trip(packer) -> None:
    _codec._scan_left = _codec._SCAN_SPAN
    long = [0] * 17 + [BIG]  # longer than a scan looks at: packed, then walked (as before)
    deep = [[[BIG]]]
    for value in (long, deep):
        body, bufs = transport.encode(value)
        assert len(bufs) == 1 and bufs[0] is BIG
        assert transport.decode(body, bufs) == value
