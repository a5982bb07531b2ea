"""Issue 16, target 4 (a million agents): lean unread futures and drained constructions.

- An unread result whose plain reply came keeps only the reply's body (``_lean.kept_body``): the
  transport future, its header and frame list are gone, and every behaviour stays.
- A server builds a burst of constructions in one worker task; a constructor that waits on a
  mesh task (here: it creates another object on the same server) hands the queue on.
"""

from __future__ import annotations

import gc
import pickle
import tracemalloc

import pytest

import mesh
from mesh.client import _lean


class Leaf(metaclass=mesh.RpcMeta):
    def __init__(self, k: int) -> None:
        self.k = k

    def get(self) -> int:
        return self.k

    @mesh.async_func
    def twice(self, x: int) -> int:
        return 2 * x + self.k

    @mesh.async_func
    def echo(self, x: object) -> object:
        return x


class Maker(metaclass=mesh.RpcMeta):
    """Its constructor creates a Leaf on the same server and calls it: it waits on a creation
    queued behind its own."""

    def __init__(self, host: str, port: int) -> None:
        self.leaf = Leaf(7, to_dist={"host": host, "port": port})
        self.v = self.leaf.get()

    def value(self) -> int:
        return self.v


def on(srv):
    return {"host": srv.host, "port": srv.port}


def _wait_done(futures, timeout=30.0):
    done, pending = mesh.wait(futures, num_returns=len(futures), timeout=timeout)
    assert len(done) == len(futures) and not pending


def test_an_unread_plain_reply_keeps_only_its_body(spawn_server):
    srv = spawn_server(port=0)
    leaf = Leaf(1, to_dist=on(srv))
    futures = [leaf.twice(i) for i in range(200)]
    _wait_done(futures)
    assert all(_lean.kept_body(f._mesh_call) for f in futures)
    assert [f.result() for f in futures] == [2 * i + 1 for i in range(200)]
    assert all(f.done() for f in futures)


def test_a_compacted_future_keeps_every_behaviour(spawn_server):
    srv = spawn_server(port=0)
    leaf = Leaf(3, to_dist=on(srv))
    f = leaf.twice(5)
    _wait_done([f])
    assert _lean.kept_body(f._mesh_call)
    assert f.cancel() is False  # done: nothing to stop
    assert f + 1 == 14 and f == 13
    assert list(mesh.as_completed([f])) == [f]
    # passed to another call: the receiver reads it from the producer
    assert leaf.echo(f).result() == 13
    # pickled elsewhere (pinned): a copy reads it again from the producer
    copy = pickle.loads(pickle.dumps(f))
    assert copy.result(timeout=10) == 13


def test_an_error_reply_is_not_compacted(spawn_server):
    srv = spawn_server(port=0)
    leaf = Leaf(3, to_dist=on(srv))
    f = leaf.twice("x")
    _wait_done([f])
    assert not _lean.kept_body(f._mesh_call)
    try:
        f.result()
    except mesh.RemoteError as exc:
        assert isinstance(exc, TypeError)
    else:
        raise AssertionError("expected the remote TypeError")


def test_unread_results_are_small(spawn_server):
    srv = spawn_server(port=0)
    leaf = Leaf(0, to_dist=on(srv))
    leaf.twice(0).result()
    n = 2000
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        futures = [leaf.twice(i) for i in range(n)]
        _wait_done(futures)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    per = sum(s.size_diff for s in after.compare_to(before, "filename")) / n
    assert per < 700, f"{per:.0f} bytes per unread result"  # was ~1,000 before the compaction
    assert futures[-1].result() == 2 * (n - 1)


def test_a_constructor_that_waits_on_a_creation_behind_it_does_not_hang(spawn_server):
    srv = spawn_server(port=0, capacity=4)
    makers = [Maker(srv.host, srv.port, to_dist=on(srv)) for _ in range(3)]
    assert [m.value() for m in makers] == [7, 7, 7]


def test_a_burst_of_creations_is_answered_in_order_and_whole(spawn_server):
    srv = spawn_server(port=0)
    leaves = [Leaf(i, to_dist=on(srv)) for i in range(500)]
    futures = [leaf.twice(1) for leaf in leaves]
    assert [f.result(timeout=30) for f in futures] == [i + 2 for i in range(500)]


@pytest.fixture
def restoring_gc():
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_the_client_collector_is_tuned_only_from_cpythons_defaults(monkeypatch, restoring_gc):
    from mesh import _scale_gc

    gc.set_threshold(700, 10, 10)
    monkeypatch.setenv(_scale_gc.ENV, "default")
    assert not _scale_gc.tune() and gc.get_threshold() == (700, 10, 10)
    monkeypatch.delenv(_scale_gc.ENV)
    gc.set_threshold(2000, 10, 10)  # the program set its own: kept
    assert not _scale_gc.tune() and gc.get_threshold() == (2000, 10, 10)
    gc.set_threshold(700, 10, 10)
    assert _scale_gc.tune() and gc.get_threshold() == _scale_gc.THRESHOLDS


def test_a_process_that_creates_at_scale_gets_the_tuned_collector(spawn_server, monkeypatch, restoring_gc):
    from mesh import _create_many, _scale_gc

    srv = spawn_server(port=0)
    gc.set_threshold(700, 10, 10)
    monkeypatch.setattr(_scale_gc, "AT", _create_many._made[0] + 20)  # 20 batched creations from now
    on = {"host": srv.host, "port": srv.port}
    assert Leaf(0, to_dist=on).get() == 0  # the class is proven there: later creations are batched
    few = [Leaf(i, to_dist=on) for i in range(10)]
    assert gc.get_threshold() == (700, 10, 10)
    more = [Leaf(i, to_dist=on) for i in range(20)]
    assert gc.get_threshold() == _scale_gc.THRESHOLDS
    assert [p.get() for p in few + more] == list(range(10)) + list(range(20))
