"""Issue 16 target 3: a large result's "big" reply to its caller goes out before the fetch replies
carrying the value (NOTES-bigvalue2.md), so the caller knows its reply said ``big`` (and reports a
dropped future at once) even when a consumer's fetch of the value is answered first."""

from __future__ import annotations

from mesh._core import wire
from mesh.server._results import Results
from mesh.server._store import LocalPool


def test_first_runs_after_the_store_and_before_the_fetches():
    results = Results(LocalPool())
    order: list = []
    results.expect("t", "sess")
    results.when_done("t", lambda e: order.append(("fetch", results.pool.get("t") is not None)))
    entry = ({"op": wire.OK}, b"\xc0", [b"x" * 100_000])
    assert results.complete("t", "sess", entry, lambda stored: order.append(("first", stored, results.pool.get("t") is entry)))
    assert order == [("first", True, True), ("fetch", True)]


def test_first_is_told_a_released_result_was_not_stored():
    results = Results(LocalPool())
    results.expect("t", "sess")
    results.release("t", "sess")  # released while it ran: dropped when it ends
    told: list = []
    assert not results.complete("t", "sess", ({"op": wire.OK}, b"\xc0", []), told.append)
    assert told == [False]
