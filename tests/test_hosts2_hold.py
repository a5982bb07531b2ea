"""Issue 16, target 5 (many hosts): a pipelined batch is held open while an earlier batch to the
same server is not answered (Nagle's rule per server), so batches grow with the rate a server
is given; a proxy's first use sends its held batch at once; detached objects are never held."""

from __future__ import annotations

import os
import threading
import time

import mesh
from mesh import _create_many


class Slowly(metaclass=mesh.RpcMeta):
    """Its constructor waits until ``path`` exists (at most 30 s): a batch that is not answered yet."""

    def __init__(self, path: str, k: int = 0) -> None:
        deadline = time.monotonic() + 30
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.k = k

    def get(self) -> int:
        return self.k


class Tally(metaclass=mesh.RpcMeta):
    def __init__(self, n: int) -> None:
        self.n = n

    def bump(self) -> int:
        self.n += 1
        return self.n


def on(srv):
    return {"host": srv.host, "port": srv.port}


def _held_behind(spawn_server, tmp_path, monkeypatch, k: int):
    """A server whose classes are proven, then one ``Slowly(k)`` out and unanswered until the
    returned gate is touched: ``(server, gate, batches sent from then on, the slow proxy)``."""
    srv = spawn_server(port=0, capacity=4)
    gate = tmp_path / "open"
    gate.touch()
    _prove(Slowly(str(gate), to_dist=on(srv)), Tally(0, to_dist=on(srv)))
    gate.unlink()
    sent = _sends(monkeypatch)
    slow = Slowly(str(gate), k, to_dist=on(srv))
    _io_turn()
    return srv, gate, sent, slow


def _prove(*proxies) -> None:
    """Wait until these first creations are answered (to_dist() returns before: it is pipelined),
    so that the classes are proven on the server and later creations are batched."""
    from mesh import _pipeline

    for proxy in proxies:
        _pipeline.settle(proxy)


def _sends(monkeypatch) -> list[list[str]]:
    """The batches sent from now on (their object ids), in order."""
    sent: list[list[str]] = []
    real = _create_many._send

    def counted(batch):
        sent.append(list(batch.ids))
        real(batch)

    monkeypatch.setattr(_create_many, "_send", counted)
    return sent


def _io_turn() -> None:
    """Wait until the I/O thread ran what was queued before (its flushes of open batches)."""
    from mesh.client._client import get_client

    done = threading.Event()
    get_client().node.call_soon(done.set)
    assert done.wait(10)


def _until(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_a_batch_is_held_while_the_servers_last_one_is_unanswered(spawn_server, tmp_path, monkeypatch):
    srv, gate, sent, slow = _held_behind(spawn_server, tmp_path, monkeypatch, 7)
    assert len(sent) == 1
    made = []
    for part in range(3):  # three bursts, each flushed by the I/O thread: one held batch for all
        made += [Tally(10 * part + i, to_dist=on(srv)) for i in range(5)]
        _io_turn()
    assert len(sent) == 1, "held while the first batch is unanswered"
    gate.touch()
    _until(lambda: len(sent) == 2)  # the answer came: the held batch goes, all 15 in one request
    assert len(sent[1]) == 15
    assert slow.get() == 7
    assert [m.bump() for m in made] == [10 * p + i + 1 for p in range(3) for i in range(5)]


def test_first_use_sends_a_held_batch_at_once(spawn_server, tmp_path, monkeypatch):
    srv, gate, sent, slow = _held_behind(spawn_server, tmp_path, monkeypatch, 1)
    made = [Tally(i, to_dist=on(srv)) for i in range(4)]
    _io_turn()
    assert len(sent) == 1
    t = time.monotonic()
    assert made[2].bump() == 3  # sent now, built by another drain while the first batch hangs
    assert time.monotonic() - t < 10
    assert len(sent) == 2 and len(sent[1]) == 4
    assert not gate.exists()  # the slow one is still unanswered: its batch did not hold this up
    gate.touch()
    assert slow.get() == 1
    assert [m.bump() for m in made] == [1, 2, 4, 4]


def test_detached_objects_are_never_held(spawn_server, tmp_path, monkeypatch):
    srv, gate, sent, slow = _held_behind(spawn_server, tmp_path, monkeypatch, 1)
    kept = [Tally(i, to_dist={**on(srv), "detached": True}) for i in range(3)]
    _io_turn()
    # (the I/O thread may have flushed the loop's objects in one request or two: each goes unheld)
    assert sum(len(ids) for ids in sent[1:]) == 3, "a detached batch goes even while another is unanswered"
    assert not gate.exists()
    gate.touch()
    assert slow.get() == 1
    assert [k.bump() for k in kept] == [1, 2, 3]
    for k in kept:
        mesh.delete(k)


def test_a_lone_creation_and_a_loop_are_not_held(spawn_server, monkeypatch):
    srv = spawn_server(port=0)
    _prove(Tally(0, to_dist=on(srv)))
    sent = _sends(monkeypatch)
    one = Tally(5, to_dist=on(srv))
    _io_turn()
    assert len(sent) == 1  # nothing was in flight: sent on the I/O thread's next turn
    assert one.bump() == 6
    many = [Tally(i, to_dist=on(srv)) for i in range(2000)]
    assert [m.bump() for m in many[::97]] == [i + 1 for i in range(0, 2000, 97)]
    _until(lambda: _create_many.outstanding() == 0)
    assert sum(len(s) for s in sent) == 2001  # every object sent once
    assert not _create_many._unsent and not _create_many._busy


def test_a_held_batch_goes_with_the_next_answer_even_while_the_server_stays_busy(spawn_server, tmp_path,
                                                                                monkeypatch):
    """Two batches out (a hanging one and a quick one): the held batch goes with the quick one's
    answer, not only once nothing is out."""
    srv, gate, sent, slow = _held_behind(spawn_server, tmp_path, monkeypatch, 1)
    quick = [Tally(i, to_dist={**on(srv), "detached": True}) for i in range(2)]  # out too (never held)
    _io_turn()
    made = [Tally(i, to_dist=on(srv)) for i in range(3)]  # held: two batches are out
    _io_turn()
    out = sum(len(ids) for ids in sent)
    assert out == 3  # the slow one and the two detached ones; the three are held
    _until(lambda: sum(len(ids) for ids in sent) == 6)  # the detached batch's answer sent them
    assert not gate.exists()  # while the slow batch is still unanswered
    assert [m.bump() for m in made] == [1, 2, 3]
    gate.touch()
    assert slow.get() == 1
    for q in quick:
        mesh.delete(q)


def test_a_call_to_the_server_sends_its_held_creations_first(spawn_server, tmp_path, monkeypatch):
    """Program order: objects created before a call to any object of that server reach the server
    before the call (a held batch never lets a later call overtake it there)."""
    srv = spawn_server(port=0, capacity=4)
    gate = tmp_path / "open"
    gate.touch()
    first, known = Slowly(str(gate), to_dist=on(srv)), Tally(0, to_dist=on(srv))
    _prove(first, known)
    gate.unlink()
    sent = _sends(monkeypatch)
    slow = Slowly(str(gate), 3, to_dist=on(srv))  # out, unanswered until the gate opens
    _io_turn()
    made = [Tally(100 + i, to_dist=on(srv)) for i in range(3)]
    _io_turn()
    assert len(sent) == 1  # held behind the unanswered one
    assert known.bump() == 1  # a call to another object there: the held creations went before it
    assert len(sent) == 2 and len(sent[1]) == 3
    gate.touch()
    assert slow.get() == 3
    assert [m.bump() for m in made] == [101, 102, 103]


def test_a_held_batch_is_sent_before_the_answer_it_waited_for_lets_anyone_go(spawn_server, tmp_path, monkeypatch):
    """The answer that ends a hold sends the held batch *before* it completes the answered batch's
    waiter: a caller woken by that waiter (a first use) cannot send a call that overtakes the held
    creations (at load, a call on a capacity=1 server then ran before them and held them up)."""
    srv, gate, sent, slow = _held_behind(spawn_server, tmp_path, monkeypatch, 2)
    made = [Tally(i, to_dist=on(srv)) for i in range(3)]
    _io_turn()
    assert len(sent) == 1  # held behind the slow one
    seen: list[int] = []
    slow._mesh_inst.add_done_callback(lambda _f: seen.append(len(sent)))  # the slow batch's waiter
    gate.touch()
    assert slow.get() == 2
    _until(lambda: seen)
    assert seen == [2], "the held batch went before the waiter let its caller go"
    assert [m.bump() for m in made] == [1, 2, 3]


def test_a_call_sends_the_servers_open_batch_first(spawn_server, monkeypatch):
    """A batch still open (the I/O thread has not flushed it yet) goes before a later call to that
    server, from the calling thread: the server sees the creations first (program order)."""
    from mesh.client._client import get_client

    srv = spawn_server(port=0, capacity=1)
    known = Tally(0, to_dist=on(srv))
    _prove(known)
    sent = _sends(monkeypatch)
    hold, held = threading.Event(), threading.Event()

    def block() -> None:  # the I/O thread waits here: nothing queued behind it runs
        held.set()
        hold.wait(10)

    get_client().node.call_soon(block)
    assert held.wait(10)
    try:
        made = [Tally(10 + i, to_dist=on(srv)) for i in range(3)]  # one open batch, its flush queued
        assert sent == []
        fut = known.bump.remote()
        assert len(sent) == 1 and len(sent[0]) == 3, "the open batch was sent before the call"
    finally:
        hold.set()
    assert fut.result(timeout=20) == 1
    assert [m.bump() for m in made] == [11, 12, 13]


class Other(metaclass=mesh.RpcMeta):
    def __init__(self, n: int) -> None:
        self.n = n

    def get(self) -> int:
        return self.n


def test_held_batches_of_two_classes_go_with_the_answer_in_creation_order(spawn_server, tmp_path, monkeypatch):
    """What is held is read from the batches not sent yet (``_unsent``, ``batch.held``): with the
    server's next answer every held batch goes, in the order the objects were created."""
    srv = spawn_server(port=0, capacity=4)
    gate = tmp_path / "open"
    gate.touch()
    _prove(Slowly(str(gate), to_dist=on(srv)), Tally(0, to_dist=on(srv)), Other(0, to_dist=on(srv)))
    gate.unlink()
    sent = _sends(monkeypatch)
    slow = Slowly(str(gate), 4, to_dist=on(srv))
    _io_turn()
    tallies = [Tally(i, to_dist=on(srv)) for i in range(2)]
    others = [Other(10 + i, to_dist=on(srv)) for i in range(3)]
    _io_turn()
    assert len(sent) == 1  # both held behind the slow one
    unsent = _create_many._unsent[srv.address]
    assert [len(b.ids) for b in unsent] == [2, 3] and all(b.held and not b.sent for b in unsent)
    gate.touch()
    _until(lambda: len(sent) == 3)
    assert [len(ids) for ids in sent[1:]] == [2, 3]  # Tally's batch first: created first
    assert srv.address not in _create_many._unsent
    assert slow.get() == 4
    assert [t.bump() for t in tallies] == [1, 2] and [o.get() for o in others] == [10, 11, 12]
