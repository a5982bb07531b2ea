"""Issue 16 target 3: a large binary value is encoded without copying it (NOTES-bigvalue2.md).

The codec's fast path packs a value with a strict msgpack packer and keeps the body only if it
is under the buffer threshold; a 10 MB ``bytes`` result was copied into the packer and its body
(~4 ms on the producer) before going to its buffer frame anyway. A top-level binary value now
goes straight to its frame: the same wire body as before, the very object as the buffer.
"""

from __future__ import annotations

import msgpack
import pytest

from transport._codec import BUFFER_THRESHOLD, EXT_BUFREF, _walk, decode, encode


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_large_binary_is_its_own_buffer_with_the_walks_body(kind):
    value = kind(b"\x01" * (BUFFER_THRESHOLD + 1))
    body, buffers = encode(value)
    assert len(buffers) == 1 and buffers[0] is value  # not copied
    walked: list = []
    assert body == msgpack.packb(_walk(value, walked, BUFFER_THRESHOLD), use_bin_type=True)  # same wire form
    assert msgpack.unpackb(body).code == EXT_BUFREF
    got = decode(body, buffers)
    assert type(got) is kind and bytes(got) == bytes(value)


def test_threshold_still_applies():
    small = b"\x02" * (BUFFER_THRESHOLD - 1)
    assert encode(small)[1] == []  # inline, as before
    body, buffers = encode(small + b"\x02", threshold=BUFFER_THRESHOLD * 2)
    assert buffers == []
    body, buffers = encode(small, threshold=16)
    assert buffers == [small]


def test_subclass_and_containers_unchanged():
    class B(bytes):
        pass

    big = b"\x03" * (BUFFER_THRESHOLD * 2)
    value = [big, {"k": big}]
    body, buffers = encode(value)
    assert len(buffers) == 2 and decode(body, buffers) == value
    sub = B(big)
    got = decode(*encode(sub))
    assert type(got) is B and got == big  # pickled whole, as before
