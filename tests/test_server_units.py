"""The server's rooms without sockets: mailbox, result store, release bookkeeping, dispatch, options.

Each test runs in milliseconds: nothing here binds a socket or starts a server process.
"""

from __future__ import annotations

import argparse

import pytest

from mesh._core import wire
from mesh._core.options import ServerOptions
from mesh.server import _results
from mesh.server._classes import ClassResolver
from mesh.server._dispatch import Servicer
from mesh.server._holders import Holders
from mesh.server._mailbox import Actor, Call
from mesh.server._results import Results
from mesh.server._store import LocalPool


def _call(chain=None, task=None, keep=False, sess=None, replies=None):
    return Call((replies if replies is not None else []).append, "m", b"", [], chain, task, keep, sess)


def _ok(value=b"v"):
    return {"op": wire.OK}, value, []


# -- mailbox --------------------------------------------------------------------------------------
def test_mailbox_runs_one_call_at_a_time_in_arrival_order():
    actor = Actor("a", "C", None)
    assert actor.admit(_call()) is False  # the constructor runs first
    second = _call()
    assert actor.admit(second) is False
    assert actor.take_next() is not None  # the constructor ends: the first call runs
    assert actor.take_next() is second  # then the second
    assert actor.take_next() is None  # and the actor is idle
    assert actor.admit(_call()) is True  # an idle actor runs a call at once


def test_mailbox_lets_the_same_chain_in_while_it_waits():
    actor = Actor("a", "C", None)
    actor.take_next()  # constructed, idle
    assert actor.admit(_call(chain="c1")) is True
    other, same = _call(chain="c2"), _call(chain="c1")
    assert actor.admit(other) is False
    assert actor.admit(same) is False
    assert actor.block("c1") == [same]  # the waiting call's chain re-enters; the other chain waits
    assert actor.admit(_call(chain="c1")) is True  # while c1 waits, more c1 calls enter at once
    assert list(actor.queue) == [other]
    actor.unblock("c1")
    assert actor.blocked == {}


def test_a_failed_mailbox_hands_back_its_queue_and_refuses_calls():
    actor = Actor("a", "C", None)
    queued = [_call(), _call()]
    for c in queued:
        actor.admit(c)
    assert actor.fail("deleted") == queued and not actor.queue
    assert actor.admit(_call()) == "deleted"
    actor.fail("server shut down", keep_reason=True)
    assert actor.failed == "deleted"


# -- release bookkeeping --------------------------------------------------------------------------
def test_holders_done_only_when_owner_and_every_borrower_are_gone_in_any_order():
    h = Holders()
    # a borrower reported before its maker (the owner) names it
    assert h.gone("t", "b1", [], "s") == (False, None, [])
    assert h.gone("t", "", ["b1", "b2"], "s") == (False, None, [])  # the owner made b1 and b2
    assert h.gone("t", "b2", []) == (True, "s", [])  # the owner's session comes back with it
    assert len(h) == 0


def test_holders_forget_the_oldest_past_their_bound():
    h = Holders(refs_max=2)
    h.hold("s", "t0")
    for i in range(3):
        h.gone(f"t{i}", "", [f"b{i}"], "s")
    done, _, forgotten = h.gone("t3", "", ["b3"], "s")
    assert forgotten == ["t1"] and len(h) == 2  # t0 went with the third, t1 now
    assert not h.holds("s", "t0")


def test_a_session_end_releases_what_only_it_held_and_loosens_what_a_copy_holds():
    h = Holders()
    h.hold("s", "alone")
    h.hold("s", "shared")
    h.gone("shared", "b1", [])  # a borrower of "shared" reported (its maker has not yet)
    h.gone("shared", "", ["b1", "b2"], "s")  # ... b2 still out there
    release, loosen = h.end_session("s")
    assert release == ["alone"] and loosen == ["shared"]
    assert not h.holds("s", "alone")


# -- result store ---------------------------------------------------------------------------------
def test_a_fetch_waits_for_a_running_task_and_gets_its_result():
    results = Results(LocalPool())
    results.expect("t", "s")
    got = []
    results.when_done("t", got.append)
    assert got == []
    assert results.complete("t", "s", _ok()) is True
    assert got == [_ok()]
    assert results.pool.is_held("t")  # its caller's session holds it
    results.when_done("t", got.append)  # later fetches are answered from the store
    assert got == [_ok(), _ok()]


def test_a_task_released_while_it_runs_is_dropped_when_it_ends():
    results = Results(LocalPool())
    results.expect("t", "s")
    results.release("t", "s")
    assert results.complete("t", "s", _ok()) is False
    assert results.pool.get("t") is None and not results.holders.holds("s", "t")


def test_a_fetch_that_overtakes_its_task_waits_a_grace_then_expires(monkeypatch):
    results = Results(LocalPool())
    got = []
    results.when_done("early", got.append)  # never seen: waits for its call
    results.expect("early", None)
    results.complete("early", None, _ok())
    assert got == [_ok()]
    results.when_done("never", got.append)
    results.expire_early()  # within the grace: still waiting
    assert len(got) == 1
    monkeypatch.setattr(_results.time, "monotonic", lambda: 1e12)
    results.expire_early()
    assert got[1][0]["kind"] == wire.K_EXPIRED


def test_a_fetch_for_another_run_is_answered_at_once():
    results = Results(LocalPool())
    got = []
    results.when_done("old", got.append, wait_unseen=False)
    assert got[0][0]["kind"] == wire.K_EXPIRED


def test_release_items_drop_a_shared_result_when_the_last_holder_goes():
    results = Results(LocalPool())
    results.expect("t", "s")
    results.complete("t", "s", _ok())
    results.release_items([["t", "", ["b1"]]], "s")  # the owner is gone, its borrower is not
    assert results.pool.get("t") is not None
    results.release_items([["t", "b1", []]], "other")
    assert results.pool.get("t") is None


def test_a_session_end_drops_its_results_and_loosens_shared_ones():
    results = Results(LocalPool())
    for task in ("mine", "shared"):
        results.expect(task, "s")
        results.complete(task, "s", _ok())
    results.release_items([["shared", "", ["b1"]]], None)  # passed on: b1 holds it
    results.expect("shared2", "s")
    results.end_session("s")
    assert results.pool.get("mine") is None
    assert results.pool.get("shared") is not None and not results.pool.is_held("shared")


# -- dispatch -------------------------------------------------------------------------------------
class _Router:
    def __init__(self):
        self.replies = []

    def reply(self, identity, header, body, buffers):
        self.replies.append(header)


@pytest.fixture
def servicer():
    s = Servicer(name="unit", capacity=1, pool=LocalPool(), resolver=ClassResolver(), max_message_size=2**20,
                 on_stop=lambda: None)
    yield s
    s.close(0)


def test_a_bug_in_a_handler_is_logged_and_answered_internal(servicer, caplog):
    router = _Router()

    def broken(header, body, buffers, reply):
        raise KeyError("oops")

    servicer._ops[wire.LOOKUP] = broken
    servicer.handle(router, b"id", {"op": wire.LOOKUP, "id": 1, "name": "x"}, None, [])
    assert router.replies[0]["kind"] == wire.K_INTERNAL and router.replies[0]["re"] == 1
    assert "KeyError" in caplog.text and "Traceback" in caplog.text


def test_malformed_input_is_answered_badrequest_and_leaves_no_trace(servicer):
    router = _Router()
    servicer.handle(router, b"id", {"op": wire.CALL, "id": 1, "obj": "o", "m": "m", "keep": 1, "sess": "s"}, None, [])
    servicer.handle(router, b"id", {"op": "launch", "id": 2}, None, [])
    assert [r["kind"] for r in router.replies] == [wire.K_BADREQUEST, wire.K_BADREQUEST]
    assert not list(servicer.sessions)


def test_ping_and_unknown_object(servicer):
    router = _Router()
    servicer.handle(router, b"id", {"op": wire.CALL, "id": 1, "obj": "nope", "m": "m"}, None, [])
    assert router.replies[0]["kind"] == wire.K_NOTFOUND
    assert servicer.info()["name"] == "unit"


# -- options --------------------------------------------------------------------------------------
def test_server_options_reach_a_subprocess_unchanged():
    opts = ServerOptions(port=12001, capacity=3, name="n", pool_type="local", advertise=False, no_code=True,
                         max_expire_time=60, lease_ttl=4, grace=0)
    parser = argparse.ArgumentParser()
    ServerOptions.add_arguments(parser)
    again = ServerOptions(**ServerOptions.from_args(parser.parse_args(opts.to_argv())))
    assert again == opts


@pytest.mark.parametrize("bad, match", [
    ({"capacity": 0}, "capacity must be at least 1"), ({"port": "x"}, "is not a number"),
    ({"pool_type": "disk"}, "unknown pool_type"), ({"pool_type": "redis"}, "needs redis_url"),
    ({"grace": -1}, "grace must be 0 or more"), ({"host": "10.0.0.1:5"}, "includes a port"),
    ({"host": "0.0.0.0"}, "without a shared secret"),
])
def test_server_options_refuse_bad_values(bad, match, monkeypatch):
    monkeypatch.delenv("MESH_SECRET", raising=False)
    with pytest.raises(ValueError, match=match):
        ServerOptions(**bad)


# -- sessions -------------------------------------------------------------------------------------
def test_sessions_expire_in_silence_but_not_right_after_the_server_itself_stalled(monkeypatch):
    from mesh.server._sessions import Sessions

    clock = [100.0]
    monkeypatch.setattr("mesh.server._sessions.time.monotonic", lambda: clock[0])
    sessions = Sessions(lease_ttl=1.0)
    sessions.touch("a")
    clock[0] += 0.3
    assert sessions.expired() == []  # heard from 0.3 s ago
    clock[0] += 0.3
    sessions.touch("b")
    clock[0] += 0.3
    assert sessions.expired() == []  # a: 0.9 s
    clock[0] += 0.3
    assert sessions.expired() == ["a"]  # a: 1.2 s of silence, checked every 0.3 s: gone
    clock[0] += 5.0  # the server did not run for 5 s: b's renewals may be unread in its socket
    assert sessions.expired() == [] and list(sessions) == ["b"]
    clock[0] += 0.3
    assert sessions.expired() == ["b"]  # checked again on time, still silent: gone
