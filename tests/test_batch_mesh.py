"""Batches under the mesh (issue 16 target 2): async calls that queue up travel in batches, and
every call keeps its own order, error, deadline, cancellation and reply."""

from __future__ import annotations

import time

import pytest

import mesh
from mesh import RpcMeta, async_func
from mesh._core import runtime


class Tally(metaclass=RpcMeta):
    def __init__(self) -> None:
        self.items: list[int] = []

    @async_func
    def add(self, i: int) -> int:
        if i % 97 == 13:
            raise ValueError(f"bad {i}")
        self.items.append(i)
        return i

    @async_func
    def nap(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    def read(self) -> list[int]:
        return self.items


def _router(srv: mesh.AgentServer):
    return srv._host.servicer.router  # type: ignore[union-attr]


def _peer(address: str):
    node = runtime.current().node  # type: ignore[union-attr]
    return node._dealers.peers.get(address)


def _results(futures) -> list:
    out = []
    for f in futures:
        try:
            out.append(f.result(30))
        except ValueError as exc:
            out.append(str(exc).splitlines()[0].removeprefix("ValueError: "))
    return out


def test_async_calls_keep_their_order_and_their_own_errors_in_batches(server: mesh.AgentServer):
    t = Tally(to_dist={"host": server.host, "port": server.port})
    assert t.add(0).result(10) == 0
    futures = [t.add(i) for i in range(1, 3001)]
    got = _results(futures)
    want = [f"bad {i}" if i % 97 == 13 else i for i in range(1, 3001)]
    assert got == want  # one failing call in a batch fails only itself
    assert t.read() == [0] + [i for i in range(1, 3001) if i % 97 != 13]  # arrival order kept
    assert _router(server).batches_in > 0  # they did travel in batches


def test_a_deadline_and_a_cancel_act_on_single_calls_of_a_batch(server: mesh.AgentServer):
    t = Tally(to_dist={"host": server.host, "port": server.port})
    t.add(0).result(10)
    first = t.nap(1.0)  # holds the mailbox: the rest queue behind it
    with mesh.deadline(0.3):
        late = [t.add(i) for i in range(1, 200)]
    kept = [t.add(i) for i in range(200, 400) if i % 97 != 13]
    gone = kept[10]
    assert gone.cancel() is True  # still queued: it never runs
    assert first.result(10) == 1.0
    for f in late:
        with pytest.raises(mesh.DeadlineExceeded):
            f.result(10)
    with pytest.raises(mesh.Cancelled):
        gone.result(10)
    want = [i for i in range(200, 400) if i % 97 != 13]
    assert [f.result(10) for k, f in enumerate(kept) if k != 10] == want[:10] + want[11:]
    assert want[10] not in t.read() and not set(range(1, 200)) & set(t.read())


def test_batches_over_curve(spawn_server):
    srv = spawn_server(port=0, secret="batch-secret")
    mesh.init(secret="batch-secret")
    t = Tally(to_dist={"host": srv.host, "port": srv.port})
    t.add(0).result(20)
    futures = [t.add(i) for i in range(1, 2001)]
    assert _results(futures) == [f"bad {i}" if i % 97 == 13 else i for i in range(1, 2001)]
    peer = _peer(srv.address)
    assert peer is not None and peer.batch > 0  # the CURVE handshake carried the announcement
