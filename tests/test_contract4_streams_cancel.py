"""Acceptance tests of API.md, fourth pass: streams and cancellation corners (empty streams, a queued
stream cancelled, a reader that leaves early, a producer that dies, cancel and deadlines three calls deep)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest

import mesh
from conftest import wait_until


class Src(metaclass=mesh.RpcMeta):
    def __init__(self):
        self.log = []

    @mesh.stream_func
    def empty(self):
        self.log.append("empty ran")
        return
        yield  # a generator with no items

    @mesh.stream_func
    async def aempty(self):
        self.log.append("aempty ran")
        return
        yield

    @mesh.stream_func
    def count(self, n, delay=0.0):
        self.log.append(f"count {n} ran")
        for i in range(n):
            if delay:
                time.sleep(delay)
            yield i

    @mesh.stream_func
    def msgs(self, n):
        for i in range(n):
            yield mesh.Msg("src", f"part {i}", metadata={"i": i})

    def hold(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end and not mesh.cancelled():
            time.sleep(0.01)
        return "held"

    def pid(self):
        return os.getpid()

    def get_log(self):
        return list(self.log)

    def collect(self, stream):
        return list(stream)

    def watch(self, seconds, mark=None):
        if mark:
            open(mark + ".started", "w").close()
        end = time.monotonic() + seconds
        outcome = "finished"
        while time.monotonic() < end:
            if mesh.cancelled():
                outcome = "cancelled"
                break
            time.sleep(0.01)
        self.log.append(f"watch {outcome}")
        if mark:
            open(f"{mark}.{outcome}", "w").close()
        return outcome

    def relay(self, other, seconds, mark=None):
        return other.watch(seconds, mark)

    def relay2(self, mid, last, seconds, mark):
        return mid.relay(last, seconds, mark)

    def spawn_and_hold(self, other, mark):
        other.watch.remote(30, mark)  # not awaited: still a call this call made
        end = time.monotonic() + 30
        while time.monotonic() < end:
            mesh.check_cancelled()
            time.sleep(0.01)

    async def aspawn(self, other, mark):
        other.watch.remote(30, mark)
        await asyncio.sleep(30)

    @mesh.stream_func
    def gen_calls(self, other, mark):
        yield "first"
        yield other.watch(30, mark)

    def child_left(self, other):
        return mesh.time_left(), other.lefts_leaf.remote().result(timeout=20)

    def lefts(self, other):
        return mesh.time_left(), other.lefts_leaf()

    def lefts_leaf(self):
        return mesh.time_left()


def on(srv):
    return {"host": srv.host, "port": srv.port}


def test_an_empty_stream_reads_as_no_items_every_way(server):
    src = Src(to_dist=on(server))
    assert list(src.empty()) == []
    assert src.empty().result(timeout=10) == []
    s = src.aempty()
    assert isinstance(s, mesh.Stream)

    async def main():
        return [i async for i in src.empty()], await src.aempty()

    assert asyncio.run(asyncio.wait_for(main(), 20)) == ([], [])
    assert s.result(timeout=10) == [] and s.done()
    assert list(Src().empty()) == []  # locally a plain generator with no items


def test_a_stream_of_messages_keeps_their_fields(server):
    items = Src(to_dist=on(server)).msgs(4).result(timeout=10)
    assert [m.content for m in items] == [f"part {i}" for i in range(4)]
    assert all(isinstance(m, mesh.Msg) and m.name == "src" for m in items)
    assert [m.metadata["i"] for m in items] == [0, 1, 2, 3]
    assert len({m.id for m in items}) == 4


def test_cancelling_a_queued_stream_means_its_generator_never_runs(server):
    src = Src(to_dist=on(server))
    busy = src.hold.remote(10)
    s = src.count(3)
    assert s.cancel() is True
    for read in (list, lambda x: x.result(timeout=5)):
        with pytest.raises(mesh.Cancelled):
            read(s)

    async def main():
        return [i async for i in s]

    with pytest.raises(mesh.Cancelled):
        asyncio.run(asyncio.wait_for(main(), 10))
    assert busy.cancel() is True
    assert "count 3 ran" not in src.get_log()
    assert list(src.count(2)) == [0, 1]  # the object serves again


def test_a_reader_that_leaves_early_does_not_stop_the_stream_for_others(server):
    src = Src(to_dist=on(server))
    s = src.count(5, 0.02)
    for item in s:
        if item == 1:
            break
    assert s.result(timeout=20) == [0, 1, 2, 3, 4]
    assert list(s) == [0, 1, 2, 3, 4]


def test_a_stream_queued_behind_a_call_passed_to_a_consumer_gives_it_every_item(server, spawn_server):
    other = spawn_server(port=0)
    src = Src(to_dist=on(server))
    busy = src.hold.remote(0.5)
    s = src.count(4)  # queued: its generator has not started
    f = Src(to_dist=on(other)).collect.remote(s)
    assert not f.done()
    assert busy.result(timeout=10) == "held"
    assert f.result(timeout=20) == [0, 1, 2, 3]
    assert s.result(timeout=10) == [0, 1, 2, 3]


def test_cancel_from_another_thread_stops_a_reader_in_time(server):
    src = Src(to_dist=on(server))
    s = src.count(1000, 0.02)
    got = []

    def cancel_later():
        wait_until(lambda: len(got) >= 2, timeout=10)
        assert s.cancel() is True

    t = threading.Thread(target=cancel_later)
    t.start()
    start = time.monotonic()
    with pytest.raises(mesh.Cancelled):
        for item in s:
            got.append(item)
    t.join(10)
    assert time.monotonic() - start < 10 and got[:2] == [0, 1] and len(got) < 1000


def test_a_stream_whose_server_dies_ends_with_server_unavailable_not_a_hang(spawn_server):
    srv = spawn_server(port=0)
    src, other = Src(to_dist=on(srv)), Src(to_dist=on(srv))
    s = src.count(10_000, 0.01)
    it = iter(s)
    assert [next(it), next(it)] == [0, 1]
    os.kill(other.pid(), signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(mesh.ServerUnavailable):
        for _ in it:
            pass
    with pytest.raises(mesh.MeshError):
        s.result(timeout=20)
    assert time.monotonic() - start < 20


def test_cancel_is_transitive_three_calls_deep_across_servers(server, spawn_server, tmp_path):
    other = spawn_server(port=0)
    top, mid, last = Src(to_dist=on(server)), Src(to_dist=on(other)), Src(to_dist=on(server))
    mark = str(tmp_path / "leaf")
    f = top.relay2.remote(mid, last, 30, mark)  # top (here) -> mid (other server) -> last (here)
    wait_until(lambda: os.path.exists(mark + ".started"), timeout=15)
    start = time.monotonic()
    assert f.cancel() is True
    wait_until(lambda: os.path.exists(mark + ".cancelled"), timeout=15)
    assert not os.path.exists(mark + ".finished")
    assert time.monotonic() - start < 15
    with pytest.raises(mesh.Cancelled):
        f.result(timeout=10)
    assert last.get_log() == ["watch cancelled"]


def test_a_deadline_cancels_the_nested_call_on_another_server_and_time_left_shrinks(server, spawn_server):
    other = spawn_server(port=0)
    top, leaf = Src(to_dist=on(server)), Src(to_dist=on(other))
    top.get_log(), leaf.get_log()  # both created (their first creation is pipelined: not under the deadline)
    start = time.monotonic()
    with mesh.deadline(2.0):  # (time for the nested call to start on a loaded machine)
        f = top.relay.remote(leaf, 30)
    with pytest.raises(mesh.DeadlineExceeded):
        f.result(timeout=20)
    assert time.monotonic() - start < 12  # at the deadline, not at the nested call's 30 s
    wait_until(lambda: "watch cancelled" in leaf.get_log(), timeout=10)
    with mesh.deadline(20):
        outer, inner = top.lefts(leaf)
    assert 0 < inner <= outer <= 20


def test_a_stream_read_to_its_end_is_done(server):
    src = Src(to_dist=on(server))
    not_done = 0
    for _ in range(150):
        s = src.count(3)
        for _item in s:
            pass
        not_done += not s.done()
    assert not_done == 0, f"{not_done} of 150 streams read to the end were not done()"


@pytest.mark.parametrize("kind", ["sync method", "coroutine", "stream"])
def test_cancel_reaches_calls_that_were_sent_and_not_awaited(server, spawn_server, tmp_path, kind):
    other = spawn_server(port=0)
    top, leaf = Src(to_dist=on(server)), Src(to_dist=on(other))
    mark = str(tmp_path / "child")
    if kind == "stream":
        f = top.gen_calls(leaf, mark)
        assert next(iter(f)) == "first"
    else:
        f = (top.spawn_and_hold if kind == "sync method" else top.aspawn).remote(leaf, mark)
    wait_until(lambda: os.path.exists(mark + ".started"), timeout=15)
    stopped = f.cancel()
    assert stopped is True, f"cancel() said False for a running call; it then gave: {_outcome(f)}"
    wait_until(lambda: os.path.exists(mark + ".cancelled"), timeout=15)
    assert not os.path.exists(mark + ".finished")


def _outcome(fut):
    try:
        return repr(fut.result(timeout=5))
    except Exception as exc:  # what the future holds, for the failure message
        return f"{type(exc).__name__}: {exc}"


def test_a_deadline_travels_with_calls_sent_by_remote_inside_a_call(server, spawn_server):
    other = spawn_server(port=0)
    top, leaf = Src(to_dist=on(server)), Src(to_dist=on(other))
    with mesh.deadline(20):
        mine, childs = top.child_left(leaf)
    assert 0 < childs <= mine <= 20
    assert top.child_left(leaf) == (None, None)
