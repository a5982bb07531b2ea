"""The cancel registry and scopes without sockets, and a fuzz of the new header keys and op."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh._core import wire
from mesh._core.cancel import Scope
from mesh.server._cancel import Cancels
from mesh.server._classes import ClassResolver
from mesh.server._dispatch import Servicer
from mesh.server._mailbox import Actor, Call
from mesh.server._store import LocalPool


class _Runner:
    def __init__(self):
        self.answers = []
        self.dropped = 0
        self.aio = self

    def answer(self, call, entry):
        self.answers.append((call, entry))

    def drop_body(self, body, buffers):
        self.dropped += 1

    def cancel(self, job):
        self.answers.append(("job-cancelled", job))


def _call(task="t1"):
    return Call(lambda e: None, "m", b"", [], "chain", task, True, "s")


def _actor():
    actor = Actor("obj", "Cls", "s")
    actor.running = 0
    return actor


def test_a_queued_call_is_withdrawn_answered_once_and_never_starts():
    runner = _Runner()
    cancels = Cancels(runner)
    actor, busy, call = _actor(), _call("busy"), _call("t1")
    assert actor.admit(busy) is True
    assert cancels.arrive(call, actor, "t1", None, "s") is None
    assert actor.admit(call) is False  # queued behind `busy`
    assert cancels.cancel("t1") is True
    assert cancels.cancel("t1") is False  # once
    assert list(actor.queue) == [] and runner.dropped == 1
    [(answered, entry)] = runner.answers
    assert answered is call and entry[0]["kind"] == wire.K_CANCELLED
    assert cancels.starting(call.scope) is False
    assert len(cancels) == 0


def test_a_running_call_ended_after_its_cancel_is_not_answered_twice():
    runner = _Runner()
    cancels = Cancels(runner)
    call = _call()
    cancels.arrive(call, _actor(), "t1", None, "s")
    assert cancels.starting(call.scope) is True
    assert cancels.cancel("t1") is True
    assert cancels.stuck() == 1  # a sync method that did not look yet
    assert cancels.ended(call.scope, ({"op": wire.OK}, b"", [])) is None
    assert cancels.stuck() == 0 and len(runner.answers) == 1


def test_a_finished_call_is_not_cancelled_and_its_entry_stays():
    cancels = Cancels(_Runner())
    call = _call()
    cancels.arrive(call, _actor(), "t1", None, "s")
    cancels.starting(call.scope)
    entry = ({"op": wire.OK}, b"\x01", [])
    assert cancels.ended(call.scope, entry) is entry
    assert cancels.cancel("t1") is False


def test_a_cancel_that_overtakes_its_call_stops_it_on_arrival():
    cancels = Cancels(_Runner())
    assert cancels.cancel("early") is False
    entry = cancels.arrive(_call("early"), _actor(), "early", None, "s")
    assert entry is not None and entry[0]["kind"] == wire.K_CANCELLED


def test_deadlines_stop_calls_on_arrival_at_start_and_by_the_timer():
    runner = _Runner()
    cancels = Cancels(runner)
    assert cancels.arrive(_call("a"), _actor(), "a", 0, "s")[0]["kind"] == wire.K_DEADLINE
    late = _call("b")
    cancels.arrive(late, _actor(), "b", 0.05, "s")
    deadline = time.monotonic() + 5
    while not runner.answers and time.monotonic() < deadline:
        time.sleep(0.01)
    [(answered, entry)] = runner.answers
    assert answered is late and entry[0]["kind"] == wire.K_DEADLINE
    cancels.close()


def test_a_scope_cascades_to_its_children_once_and_to_a_child_added_after(monkeypatch):
    sent = []
    monkeypatch.setattr("mesh._core.cancel.send_cancel", lambda a, t, w=wire.WHY_CANCEL: sent.append((a, t, w)))
    closed = []
    scope = Scope("p", on_cancel=closed.append)
    scope.add_child("tcp://b:1", "c1")
    scope.add_child("tcp://c:1", "c2")
    scope.drop_child("c2")
    assert scope.cancel(wire.WHY_DEADLINE) is True
    assert scope.cancel() is False
    scope.add_child("tcp://d:1", "c3")  # made after the cancel: cancelled at once
    assert sent == [("tcp://b:1", "c1", wire.WHY_DEADLINE), ("tcp://d:1", "c3", wire.WHY_DEADLINE)]
    assert closed == [wire.WHY_DEADLINE] and scope.cancelled


def test_register_is_the_seam_for_producers_that_are_not_calls():
    cancels = Cancels(_Runner())
    closed = []
    cancels.register("stream-1", closed.append)
    assert cancels.cancel("stream-1") is True and closed == [wire.WHY_CANCEL]
    cancels.unregister("stream-1")
    assert cancels.cancel("stream-1") is False


# -- fuzz: whatever a peer puts in a cancel or a call's new keys, the server answers and lives --------
class _Router:
    def __init__(self):
        self.replies = []

    def reply(self, identity, header, body, buffers):
        self.replies.append(header)


@pytest.fixture(scope="module")
def fuzzed():
    s = Servicer(name="fuzz", capacity=1, pool=LocalPool(), resolver=ClassResolver(), max_message_size=2**20,
                 on_stop=lambda: None)
    yield s
    s.close(0)


leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=140) | st.binary(max_size=8)
value = st.recursive(leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3), max_leaves=6)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from([wire.CANCEL, wire.CALL]),
    st.dictionaries(st.sampled_from(["task", "why", "all", "sess", "dl", "obj", "m", "keep", "chain"]), value, max_size=6),
)
def test_any_cancel_or_deadline_header_is_answered_and_the_server_lives(fuzzed, op, fields):
    servicer, router = fuzzed, _Router()
    servicer.handle(router, b"peer", {**fields, "op": op, "id": 1}, b"\xc0", [])
    assert len(router.replies) == 1 or (op == wire.CALL and not router.replies)  # a call waits for its object
    for header in router.replies:
        assert header["op"] in (wire.OK, wire.ERR) and header["re"] == 1
        if header["op"] == wire.ERR:
            assert header["kind"] in wire.KINDS
    router.replies.clear()
    servicer.handle(router, b"peer", {"op": wire.PING, "id": 2}, b"\xc0", [])
    assert router.replies[-1]["op"] == wire.OK
