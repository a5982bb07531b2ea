"""Issue 16 target 5: discovery's background refresher reads the browser's records again only when
the browser tells of a change or once per refresh period, not on every wake-up (each ping answer
wakes it; a read builds and merges every server's record: ~1 ms at 20 servers). No sockets."""

from __future__ import annotations

import threading
import time

import pytest
from test_manyhosts_listing import _Browser, _Rec

from mesh.client import _selection


@pytest.fixture
def state(monkeypatch):
    st = _selection._State()
    monkeypatch.setattr(_selection, "_state", st)
    pings: list[int] = []
    monkeypatch.setattr(_selection, "_send_pings", lambda records, st, now, since=None: pings.append(len(records)))
    st.pings = pings
    return st


def _wait(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.002)


def test_the_refresher_rereads_records_on_news_or_once_a_period_not_per_wake_up(state):
    browser = _Browser([_Rec(i) for i in range(1, 21)])
    state.used = time.monotonic()
    thread = threading.Thread(target=_selection._refresh, args=(browser, state), daemon=True)
    state.refresher = thread
    thread.start()
    try:
        _wait(lambda: len(state.pings) >= 1)
        assert browser.reads == 1
        for _ in range(50):  # ping answers wake it (each _record notifies): it pings from the records it has
            n = len(state.pings)
            with _selection._cond:
                _selection._cond.notify_all()
            _wait(lambda n=n: len(state.pings) > n)
        assert len(state.pings) >= 51 and all(k == 20 for k in state.pings)
        assert browser.reads <= 2, "read once per wake-up"  # (2: a refresh period passed meanwhile)
        before = browser.reads
        browser.records.append(_Rec(21))
        _selection._notify()  # the browser tells of a change: read at the next wake-up
        _wait(lambda: browser.reads > before)
        _wait(lambda: state.pings[-1] == 21)
    finally:
        with _selection._cond:
            state.closed = True
            _selection._cond.notify_all()
        thread.join(5)
    assert not thread.is_alive()
