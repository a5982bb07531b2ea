"""Units without sockets: the local result pool's bounds and the worker pool's idle wait."""

from __future__ import annotations

import threading

import pytest

from mesh.server._store import LocalPool
from mesh.server._workers import WorkerPool


def _entry(n: int):
    return {"ok": True}, b"x" * n, []


def test_local_pool_evicts_oldest_past_max_bytes():
    pool = LocalPool(max_len=100, max_bytes=1000, entry_overhead=0)
    for i in range(5):
        pool.put(f"t{i}", _entry(300))
    assert pool.nbytes <= 1000
    assert [t for t in ("t0", "t1", "t2") if pool.get(t) is None] == ["t0", "t1"]
    assert pool.get("t4") is not None
    pool.release("t4")
    assert pool.nbytes == 600


def test_local_pool_keeps_one_entry_larger_than_max_bytes():
    pool = LocalPool(max_bytes=10, entry_overhead=0)
    pool.put("big", ({"ok": True}, b"", [b"y" * 100]))
    assert pool.get("big") is not None
    assert pool.nbytes == 100
    pool.put("next", _entry(1))
    assert pool.get("big") is None and pool.get("next") is not None


def test_local_pool_counts_bytes_of_replaced_and_expired_entries(monkeypatch):
    pool = LocalPool(max_expire_time=10, entry_overhead=0)
    pool.put("a", _entry(50))
    pool.put("a", _entry(20))
    assert pool.nbytes == 20 and len(pool) == 1
    import mesh.server._store as mod

    now = mod.time.monotonic()
    monkeypatch.setattr(mod.time, "monotonic", lambda: now + 11)
    assert pool.get("a") is None
    assert pool.nbytes == 0 and len(pool) == 0


@pytest.mark.parametrize("bad", [{"max_len": 0}, {"max_expire_time": 0}, {"max_bytes": 0}])
def test_local_pool_rejects_bad_bounds(bad):
    with pytest.raises(ValueError):
        LocalPool(**bad)


def test_worker_pool_wait_idle_wakes_when_work_ends():
    pool = WorkerPool(2)
    gate = threading.Event()
    done = []
    for i in range(4):
        pool.submit(lambda i=i: (gate.wait(10), done.append(i)))
    assert not pool.wait_idle(0.05)
    gate.set()
    assert pool.wait_idle(10)
    assert sorted(done) == [0, 1, 2, 3]
    assert pool.close(5)


def test_worker_pool_blocked_task_frees_its_slot():
    pool = WorkerPool(1)
    inner = threading.Event()

    def outer():
        pool.block()
        try:
            assert inner.wait(10)
        finally:
            pool.unblock()

    pool.submit(outer)
    pool.submit(inner.set)
    assert pool.wait_idle(10)
    assert inner.is_set()
    assert pool.close(5)


def test_worker_pool_prestart_leaves_one_idle_worker_that_takes_the_first_task():
    pool = WorkerPool(4, name="pre")
    pool.prestart()
    pool.prestart()  # one at most
    (worker,) = pool._threads
    ran = []
    done = threading.Event()
    pool.submit(lambda: (ran.append(threading.current_thread()), done.set()))
    assert done.wait(10)
    assert ran == [worker] and len(pool._threads) == 1  # no thread started for the first task
    assert pool.close(5)
    pool.prestart()  # closed: nothing
    assert not worker.is_alive()
