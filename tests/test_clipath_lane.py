"""The client's threaded async lane (``mesh.client._async_lane``, issue 16 target 2): a plain
``@async_func`` / ``.remote()`` call from a thread is issued with a header template and a
``LaneReply`` future, and keeps every behaviour of the general path: values, errors with their
type, order against later sync calls, deadlines and cancellation (general path), failures of a
lost server, results released when the futures go, and the batch replies' window slots."""

from __future__ import annotations

import gc
import os
import signal
import time

import pytest

import mesh
from conftest import wait_until
from mesh import RpcMeta, async_func
from mesh._core import runtime
from mesh.client import _lean
from mesh.client import _async_lane
from mesh.client._async_lane import LaneReply
from mesh.client._client import SLOW, get_client
from mesh.client._replies import decode_reply


class Counter(metaclass=RpcMeta):
    def __init__(self) -> None:
        self.n = 0
        self.seen: list[int] = []

    @async_func
    def add(self, i: int) -> int:
        self.n += 1
        self.seen.append(i)
        return i

    @async_func
    def pair(self, i: int) -> tuple:
        return (i, i)

    @async_func
    def big(self, n: int) -> bytes:
        return b"\x07" * n

    @async_func
    def fail(self, msg: str) -> None:
        raise KeyError(msg)

    @async_func
    def nap(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    def count(self) -> int:
        return self.n

    def order(self) -> list[int]:
        return self.seen

    def plus(self, i: int) -> int:
        return i + 1


@pytest.fixture
def lane(monkeypatch) -> list:
    """The futures issued by the lane (a reply may already have replaced their LaneReply by a Replied)."""
    from mesh.client import _proxy

    made: list = []

    def issue(*args):
        got = _async_lane.issue(*args)
        if got is not SLOW:
            made.append(got)
        return got

    monkeypatch.setattr(_proxy, "lane_issue", issue)
    return made


def _on(srv: mesh.AgentServer) -> dict:
    return {"host": srv.host, "port": srv.port}


def _status(address: str) -> dict:
    client = get_client()
    return decode_reply(client.request(address, {"op": "status"}, None, timeout=5).result(10), address)


def test_plain_async_calls_take_the_lane_and_read_right(server: mesh.AgentServer, lane: list) -> None:
    c = Counter(to_dist=_on(server))
    futures = [c.add(i) for i in range(500)]
    assert lane == futures and all(type(f._mesh_call) in (LaneReply, _lean.Replied) for f in futures)
    assert [f.result(30) for f in futures] == list(range(500))
    assert all(type(f._mesh_call) is _lean.Replied for f in futures)  # only the body is kept
    # a sync method called with .remote() takes it too
    r = c.plus.remote(41)
    assert lane[-1] is r and r.result(10) == 42
    # an ext value (a tuple), a large value (buffers, big), an error: read by the general read
    assert c.pair(3).result(10) == (3, 3)
    assert c.big(300_000).result(10) == b"\x07" * 300_000
    with pytest.raises(KeyError) as info:
        c.fail("k").result(10)
    assert isinstance(info.value, mesh.RemoteError)
    f = c.add(7)
    assert f.result(10) == 7 and f.result() == 7 and f.done() and f + 1 == 8


def test_a_sync_call_after_lane_calls_runs_after_them(server: mesh.AgentServer) -> None:
    c = Counter(to_dist=_on(server))
    client = get_client()
    for rnd in range(5):
        futures = [c.add(i) for i in range(300)]
        assert c.count() == 300 * (rnd + 1)  # never before the async calls issued ahead of it
        del futures
    assert c.order() == list(range(300)) * 5
    assert wait_until(lambda: not client.peers.busy(c._mesh_id), timeout=10)


def test_arguments_that_are_not_plain_take_the_general_path(server: mesh.AgentServer, lane: list) -> None:
    c = Counter(to_dist=_on(server))
    f = c.pair((1, 2))  # a tuple argument: encoded by the codec
    assert f.result(10) == ((1, 2), (1, 2))
    g = c.add(f)  # a future argument: counted pickling
    assert g.result(10) == ((1, 2), (1, 2)) and not lane


def test_deadline_and_cancel_keep_their_meaning(server: mesh.AgentServer, lane: list) -> None:
    c = Counter(to_dist=_on(server))
    with mesh.deadline(0.3):
        f = c.nap(2.0)
    assert not lane  # under a deadline: the general path
    with pytest.raises(mesh.DeadlineExceeded):
        f.result(10)
    slow = c.nap(0.5)
    queued = c.add(1)  # a lane call queued behind a running one
    assert lane[-1] is queued
    assert queued.cancel() is True
    with pytest.raises(mesh.Cancelled):
        queued.result(10)
    assert slow.result(10) == 0.5


def test_a_lost_server_fails_lane_calls_and_leaves_nothing_in_flight(spawn_server) -> None:
    srv = spawn_server(port=0)
    c = Counter(to_dist=_on(srv))
    assert c.add(0).result(10) == 0
    client = get_client()
    slow = c.nap(30.0)
    queued = [c.add(i) for i in range(50)]
    assert client.peers.busy(c._mesh_id)
    os.kill(srv.pid, signal.SIGKILL)
    for f in [slow, *queued]:
        with pytest.raises(mesh.ServerUnavailable):  # OutcomeUnknown (sent) is one
            f.result(20)
    assert wait_until(lambda: not client.peers.busy(c._mesh_id), timeout=10)


def test_results_are_released_when_lane_futures_go(server: mesh.AgentServer) -> None:
    c = Counter(to_dist=_on(server))
    futures = [c.add(i) for i in range(400)]
    assert futures[-1].result(30) == 399
    assert _status(server.address)["results"] >= 400 - 1  # held for their owner
    del futures
    gc.collect()
    get_client().flush_releases()
    assert wait_until(lambda: _status(server.address)["results"] == 0, timeout=15, raise_=False), _status(server.address)


def test_batched_replies_free_their_window_slots(server: mesh.AgentServer) -> None:
    c = Counter(to_dist=_on(server))
    node = runtime.current().node
    for _ in range(3):
        futures = [c.add(i) for i in range(2000)]
        assert [f.result(30) for f in futures] == list(range(2000))
    assert wait_until(lambda: node.inflight(c._mesh_address) == 0, timeout=10)


def test_a_window_smaller_than_a_burst_never_stalls(spawn_server, monkeypatch) -> None:
    srv = spawn_server(port=0)
    c = Counter(to_dist=_on(srv))
    node = runtime.current().node
    monkeypatch.setattr(node._window, "size", 64)
    t = time.monotonic()
    futures = [c.add(i) for i in range(3000)]
    assert [f.result(30) for f in futures] == list(range(3000))
    assert time.monotonic() - t < 20  # a stall would cost WINDOW_STALL (1 s) per 64 calls
    assert wait_until(lambda: node.inflight(c._mesh_address) == 0, timeout=10)


def test_lane_counts_keep_an_object_busy_until_its_calls_end_and_are_swept() -> None:
    import threading

    from mesh.client._peers import _SWEEP_MIN, PeerBook

    class _Node:  # this thread is its I/O thread; a call handed to it runs at once
        io_ident = threading.get_ident()

        def call_soon(self, fn, *args):
            fn(*args)

    book = PeerBook()
    book.node = _Node()
    book.lane_started("a")
    book.lane_started("a")
    assert book.busy("a") and not book.busy("b")
    book.lane_ended("a")
    assert book.busy("a")
    book.lane_ended("a")
    assert not book.busy("a")
    for i in range(_SWEEP_MIN + 10):  # one call each, ended: swept once the table fills
        book.lane_started(str(i))
        book.lane_ended(str(i))
    book.lane_started("kept")  # in flight through a sweep: still busy
    for i in range(3 * _SWEEP_MIN):
        book.lane_started(f"x{i}")
        book.lane_ended(f"x{i}")
    assert book.busy("kept")
    assert len(book._lane_ended) <= 2 * _SWEEP_MIN and len(book._lane_started) <= 2 * _SWEEP_MIN + 1
    book.lane_ended("kept")
    assert not book.busy("kept")
