"""Fuzz the decoders of mesh.autogen: whatever a peer sends, they return or raise a clean error."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("autogen_core")

from mesh.autogen import _remote_errors, _wire  # noqa: E402

FAST = settings(max_examples=200, deadline=None)
leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.binary(max_size=20)
value = st.recursive(leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12)


@FAST
@given(st.dictionaries(st.sampled_from(["kind", "id", "topic", "agent_type", "x"]), value, max_size=5))
def test_decode_sub_returns_or_raises_a_clean_error(d):
    try:
        _wire.decode_sub(d)
    except (KeyError, ValueError, TypeError):
        pass


@FAST
@given(value)
def test_agent_and_topic_ids_return_or_raise_a_clean_error(v):
    for decode in (_wire.unaid, _wire.untopic):
        try:
            decode(v)
        except (ValueError, TypeError):
            pass


@FAST
@given(value | st.dictionaries(st.sampled_from(["type", "message", "traceback"]), value, max_size=3))
def test_rebuild_error_always_gives_an_exception(error):
    assert isinstance(_remote_errors.rebuild_error(error), BaseException)


def test_a_peers_error_type_never_imports_a_module():
    name = "json.tool"  # importable, not imported by this test run's code
    sys.modules.pop(name, None)
    exc = _remote_errors.rebuild_error({"type": f"{name}.Whatever", "message": "m"})
    assert name not in sys.modules
    assert type(exc).__name__ == "RemoteError"
