"""Issue 16, target 5 (creation flat in the number of hosts): while a loop of pipelined creations
goes on over several servers, a server's batch is held for its next runs (``mesh._create_hold``)
instead of going out with the few objects of one run; it goes when full, when the loop ends
(nothing batched for a few ticks), at its first use, or after ``MAX_HOLD``."""

from __future__ import annotations

import time

from test_hosts2_hold import Tally, _io_turn, _until, on

from mesh import _create_hold, _create_many


def _proven(servers) -> None:
    """The class is proven on each server (its first creation answered): later ones are batched."""
    from mesh import _pipeline

    for srv in servers:
        _pipeline.settle(Tally(0, to_dist=on(srv)))


def _sends(monkeypatch) -> list[tuple[str, int]]:
    """The batches sent from now on: (address, objects)."""
    sent: list[tuple[str, int]] = []
    real = _create_many._send

    def counted(batch):
        sent.append((batch.address, len(batch.ids)))
        real(batch)

    monkeypatch.setattr(_create_many, "_send", counted)
    return sent


def test_a_loop_over_servers_sends_few_large_batches_and_each_object_once(spawn_server, monkeypatch):
    servers = [spawn_server(port=0, capacity=4) for _ in range(2)]
    _proven(servers)
    _until(lambda: _create_many._hold.node is None)  # (no sweep of an earlier test runs: this one's tick applies)
    monkeypatch.setattr(_create_hold, "TICK", 0.2)  # the loop's pauses below never read as its end
    sent = _sends(monkeypatch)
    made = []
    for _ in range(20):  # runs of 5 per server, a short pause between rounds (as the other servers' runs)
        for srv in servers:
            made += [Tally(len(made) + k, to_dist=on(srv)) for k in range(5)]
        time.sleep(0.003)  # (before: each run answered by then went as a request of its own, 40 in all)
    n = len(made)
    # nothing is used: the held batches go by themselves once the loop ended (the tick's sweep)
    _until(lambda: _create_many.outstanding() == 0)
    assert sum(k for _, k in sent) == n, "every object sent exactly once"
    assert max(k for _, k in sent) <= _create_many.MAX_ITEMS
    assert len(sent) <= 12, f"{len(sent)} requests for {n} objects in 40 runs: the loop's runs were not held"
    assert [made[i].bump() for i in (0, 1, n // 2, n - 1)] == [1, 2, n // 2 + 1, n]
    _until(lambda: _create_many._hold.node is None)  # the sweep's timer stops once nothing is held


def test_first_use_sends_a_batch_held_for_the_loop_at_once(spawn_server, monkeypatch):
    servers = [spawn_server(port=0) for _ in range(2)]
    _proven(servers)
    monkeypatch.setattr(_create_hold, "TICK", 30.0)  # the loop "never ends" and nothing is held too long...
    monkeypatch.setattr(_create_hold, "MAX_HOLD", 60.0)
    sent = _sends(monkeypatch)
    made = [Tally(i, to_dist=on(servers[i % 2])) for i in range(20)]
    _io_turn()
    assert sum(k for _, k in sent) < 20, "held for the loop"  # (a server's first object may have gone alone)
    t = time.monotonic()
    assert made[4].bump() == 5  # ...yet a use sends its batch at once
    assert time.monotonic() - t < 10
    assert [m.bump() for m in made] == [1, 2, 3, 4, 6] + list(range(6, 21))
    assert _create_many.outstanding() == 0
    with _create_many._lock:  # the 30 s sweep goes (a later test's held batches must not wait for it)
        _create_many._hold.reset()


def test_paced_creations_are_not_held(spawn_server, monkeypatch):
    servers = [spawn_server(port=0) for _ in range(2)]
    _proven(servers)
    sent = _sends(monkeypatch)
    for i in range(6):  # one at a time, answered before the next (else the busy rule holds it): each goes at once
        Tally(i, to_dist=on(servers[i % 2]))
        _io_turn()
        assert len(sent) == i + 1
        _until(lambda: _create_many.outstanding() == 0)
    assert _create_many._hold.node is None
