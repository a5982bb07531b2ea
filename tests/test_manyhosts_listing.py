"""Issue 16 target 5, listing side: a listing (``mesh.servers()``) ends once every announced server
answered and nothing new was announced for the quiet time; an answer does not restart that clock.
Driven on a fake browser and hand-made answers: no sockets."""

from __future__ import annotations

import threading
import time

import pytest

from mesh.client import _selection
from mesh.client._selection import ServerInfo


class _Rec:
    def __init__(self, i: int) -> None:
        self.address = f"tcp://198.18.0.{i}:7200"
        self.name = f"host{i}"
        self.sources = frozenset({"mdns"})
        self.capacity = 8
        self.auth = False


class _Browser:
    def __init__(self, records: list) -> None:
        self.records = records
        self.reads = 0

    def servers(self) -> list:
        self.reads += 1
        return list(self.records)

    def asked_at(self) -> float:
        return time.monotonic()


@pytest.fixture
def state(monkeypatch):
    st = _selection._State()
    monkeypatch.setattr(_selection, "_state", st)
    monkeypatch.setattr(_selection, "_send_pings", lambda records, st, now, since=None: None)  # answered by hand
    return st


def _answer_later(st, rec, after: float) -> threading.Thread:
    def run() -> None:
        time.sleep(after)  # (the answer's delay is the test's subject, not a synchronisation)
        info = ServerInfo(name=rec.name, address=rec.address, capacity=8, load=0)
        with _selection._cond:
            _selection._record(st, rec, info, None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_late_answer_ends_the_listing_at_once_not_a_quiet_time_later(state):
    recs = [_Rec(1), _Rec(2)]
    browser = _Browser(recs)
    answers = [_answer_later(state, recs[0], 0.1), _answer_later(state, recs[1], 1.0)]
    t = time.monotonic()
    with _selection._cond:
        _selection._settle(browser, state, 10.0, quiet=1.0, since=t)
    took = time.monotonic() - t
    for a in answers:
        a.join(5)
    assert set(state.live) == {r.address for r in recs}
    # announced at the start: quiet by 1.0 s, the last answer at 1.0 s; before, it waited 1.0 s more
    assert 0.9 <= took < 1.8, took
    assert browser.reads < 60  # the answers alone do not re-read the browser every time


def test_a_new_announcement_restarts_the_quiet_time(state):
    recs = [_Rec(1)]
    browser = _Browser(recs)
    _answer_later(state, recs[0], 0.0).join(5)
    late = _Rec(2)

    def announce() -> None:
        time.sleep(0.5)
        browser.records.append(late)
        _selection._notify()
        _answer_later(state, late, 0.0)

    threading.Thread(target=announce, daemon=True).start()
    t = time.monotonic()
    with _selection._cond:
        _selection._settle(browser, state, 10.0, quiet=1.0, since=t - 1)
    took = time.monotonic() - t
    assert late.address in state.live
    assert took >= 1.4, took  # 0.5 s, then a quiet second after the new server
