"""A future pickled outside call arguments (to disk, into a result) is *pinned*: its copies may be
read any number of times, so when it goes (collected, or its session ends) its result becomes loose
(bounded by max_len / max_expire_time) instead of being dropped or held forever (API.md, Futures;
``test_contract_core.py::test_result_expired_loose_result``)."""

from __future__ import annotations

import gc
import pickle

import mesh
from conftest import run_app

from mesh._core.wire import PINNED_REF
from mesh.client import _holders
from mesh.server._holders import Holders


# -- producer side: the bookkeeping ---------------------------------------------------------------
def test_a_pinned_owner_alone_is_done_and_pinned():
    h = Holders()
    h.hold("s", "t")
    assert h.gone("t", "", [PINNED_REF], "s") == (True, "s", [])
    assert h.pinned("t") and not h.pinned("t")  # told once
    assert len(h) == 0


def test_a_pinned_owner_with_a_live_borrower_is_loosened_when_the_borrower_goes():
    h = Holders()
    assert h.gone("t", "", ["b1", PINNED_REF], "s") == (False, None, [])
    assert h.gone("t", "b1", []) == (True, "s", [])
    assert h.pinned("t")


def test_a_session_end_loosens_a_task_a_pinned_holder_had():
    h = Holders()
    h.hold("s", "t")
    h.hold("s", "plain")
    h.gone("t", "b1", [PINNED_REF])  # a pinned borrower went; the owner is still out there
    assert h.end_session("s") == (["plain"], ["t"])  # the owner goes with the session: loose, not released
    h.gone("u", "", ["b2", PINNED_REF], "s2")
    assert h.gone("u", "b2", []) == (True, "s2", []) and h.pinned("u")  # the caller loosens it (and unholds it)


def test_a_pinned_mark_is_forgotten_with_its_task():
    h = Holders(refs_max=1)
    h.gone("t0", "", ["b", PINNED_REF], "s")
    h.gone("t1", "", ["b"], "s")  # pushes t0 out of the table
    assert not h.pinned("t0")
    h.gone("t2", "", ["b", PINNED_REF], "s")
    h.forget(["t2"])
    assert not h.pinned("t2")


# -- caller side: the report ------------------------------------------------------------------------
class _Queue:
    def __init__(self) -> None:
        self.items: list = []

    def open(self) -> bool:
        return True

    def add(self, address, item, now=False):
        self.items.append((address, item, now))


def test_a_pinned_holder_reports_the_mark_at_once(server, monkeypatch):
    q = _Queue()
    monkeypatch.setattr(_holders, "_active", q)
    p = mesh.AsyncResult.__new__(mesh.AsyncResult)
    p._mesh_init("tcp://x:1", "task1", None, None, ref="")
    pickle.dumps(p)  # not into call arguments: pinned
    assert p.__dict__["_mesh_pinned"]
    del p
    gc.collect()
    assert q.items == [("tcp://x:1", ["task1", "", [PINNED_REF]], True)]


# -- end to end -------------------------------------------------------------------------------------
def test_a_future_pickled_to_disk_outlives_its_session_as_a_loose_result(spawn_server, tmp_path):
    srv = spawn_server()
    path = tmp_path / "fut.pickle"
    run_app(srv, f"""
import pickle
p = Producer(to_dist={{"host": HOST, "port": PORT}})
fut = p.make(1000)
assert len(fut.result(timeout=20)) == 1000
open({str(path)!r}, "wb").write(pickle.dumps(fut))  # pinned: its session ends while it lives
mesh.shutdown()
""")
    loose = pickle.loads(path.read_bytes())
    assert len(loose.result(timeout=20)) == 1000  # kept as a loose result, not dropped with the session
