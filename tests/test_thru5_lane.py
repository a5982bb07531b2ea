"""thru5: the threaded async lane's inlined issue path sends what the general path sends, and
the result store's put keeps its bounds with its evict pass skipped when it has nothing to do."""

from __future__ import annotations

import itertools
import types

import msgpack

import transport
from mesh.client import _async_lane
from mesh.client._future import AsyncResult
from mesh.client._lean import PENDING
from mesh.client._peers import PeerBook
from mesh.server._store import LocalPool


class _Node:
    def __init__(self, first_id: int) -> None:
        self._ids = itertools.count(first_id)
        self.sent: list = []

    def request_frames(self, endpoint, rid, frames, fut):
        self.sent.append((endpoint, rid, frames, fut))
        return fut


def _client(first_id: int):
    peers = PeerBook()
    peers.own("tcp://h:1")  # held already: the lane asks for no lease
    return types.SimpleNamespace(node=_Node(first_id), peers=peers, session="s1", own=lambda address: None)


def test_the_lane_header_and_future_are_what_the_general_path_makes_for_every_id_size() -> None:
    proxy = types.SimpleNamespace(_mesh_id="o1", _mesh_address="tcp://h:1", _mesh_pool=None, _mesh_inst="i1")
    body = msgpack.packb([[5], {}])
    for first in (1, 200, 300, 65_535, 65_536, 2**32 - 1, 2**32):  # fixint, uint 8/16/32/64
        client = _client(first)
        future = _async_lane._send(client, proxy, "work", AsyncResult, body)
        endpoint, rid, frames, fut = client.node.sent[-1]
        assert (endpoint, rid) == ("tcp://h:1", first) and frames[0] == transport.SIGNATURE and frames[2] == body
        header = msgpack.unpackb(frames[1])
        task = future.__dict__["_mesh_task"]
        assert header == {
            "op": "call",
            "obj": "o1",
            "m": "work",
            "sess": "s1",
            "keep": 1,
            "chain": header["chain"],
            "task": task,
            "id": first,
        }
        assert frames[1] == msgpack.packb(header)  # byte for byte: the shortest forms, in that order
        assert header["chain"] != task
        d = future.__dict__
        assert d["_mesh_call"] is fut and fut._owner is d and not fut.done() and d["_mesh_value"] is PENDING
        assert d["_mesh_inst"] == "i1" and d["_mesh_ref"] == "" and client.peers.busy("o1")
        fut.reply({"op": "ok", "re": first}, b"\x07")  # the reply ends the lane call (I/O thread: no node)
        assert not client.peers.busy("o1") and future.result() == 7
        d["_mesh_ref"] = None  # (no release queue here)


def test_a_put_keeps_the_pool_bounds_with_or_without_loose_entries() -> None:
    pool = LocalPool(max_len=2, max_expire_time=0.05, max_bytes=10_000, entry_overhead=0)
    pool.put("a", ({}, b"x" * 10, []), held=True)
    pool.put("a", ({}, b"x" * 30, []), held=True)  # replaced: counted once
    assert pool.nbytes == 30 and len(pool) == 1
    for t in ("l1", "l2", "l3"):  # loose ones past max_len: the oldest goes
        pool.put(t, ({}, b"y", []))
    assert pool.get("l1") is None and pool.loose == 2
    pool.put("big", ({}, b"z" * 9_990, []), held=True)  # past max_bytes: loose ones go first
    assert pool.nbytes <= 10_000 and pool.get("big") is not None
    pool2 = LocalPool(max_bytes=100, entry_overhead=0)
    pool2.put("h1", ({}, b"x" * 60, []), held=True)
    pool2.put("h2", ({}, b"x" * 60, []), held=True)  # held only, past max_bytes: the evict pass still runs
    assert pool2.get("h1") is None and pool2.get("h2") is not None and pool2.evicted_held == 1
