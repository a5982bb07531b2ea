"""Issue 16 target 3: the owner of a large result lets go of it at once.

A result over ``PUSH_LIMIT`` stays on its producer (the reply says ``big``) until every holder
reports. The owner's report used to wait for the client's 0.5 s release batch even when the
value was large, so a producer making a 10 MB value per transfer held ~30 of them, and each new
value landed in freshly mapped pages (~5 ms of page faults per 10 MB on this machine, far more
when it is loaded: the runs at ~30 ms of placeholder_transfer.py).
"""

from __future__ import annotations

import concurrent.futures
import gc

import mesh
from agents_lib import Consumer, Producer
from conftest import wait_until
from mesh.client import _holders
from mesh.client._client import get_client
from mesh.client._replies import decode_reply


class _Queue(_holders.ReleaseQueue):
    def __init__(self) -> None:
        self.sent: list[tuple[str, list]] = []
        super().__init__(lambda address, items: self.sent.append((address, items)), lambda: True)


def _owner(call: concurrent.futures.Future | None, children: list | None = None) -> dict:
    import os

    return {"_mesh_ref": "", "_mesh_pinned": False, "_mesh_pid": os.getpid(), "_mesh_children": children or [],
            "_mesh_address": "tcp://127.0.0.1:1", "_mesh_task": "t1", "_mesh_call": call}


def _done(reply: object = None, exc: BaseException | None = None) -> concurrent.futures.Future:
    fut: concurrent.futures.Future = concurrent.futures.Future()
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(reply)
    return fut


def test_an_owner_whose_reply_said_big_reports_at_once(monkeypatch):
    queue = _Queue()
    monkeypatch.setattr(_holders, "_active", queue)
    _holders.report(_owner(_done(({"op": "ok", "big": 1}, b"\xc0", [])), ["ref1"]))
    assert queue.sent == [("tcp://127.0.0.1:1", [["t1", "", ["ref1"]]])]


def test_small_pending_or_failed_owners_still_wait_for_the_batch(monkeypatch):
    queue = _Queue()
    monkeypatch.setattr(_holders, "_active", queue)
    _holders.report(_owner(_done(({"op": "ok"}, b"\x01", []))))  # pushed with the reply: nothing big held
    _holders.report(_owner(concurrent.futures.Future()))  # no reply yet
    _holders.report(_owner(_done(exc=RuntimeError("gone"))))  # a failed call
    _holders.report(_owner(None))
    _holders.report(_owner(_done("not a reply")))
    assert queue.sent == []
    queue.flush()
    assert len(queue.sent) == 1 and len(queue.sent[0][1]) == 5  # one batch, as before


def _status(address: str) -> dict:
    client = get_client()
    return decode_reply(client.request(address, {"op": "status"}, None, timeout=5).result(10), address)


def _queued(tasks: set) -> list:
    """Reports of ``tasks`` still waiting for the release batch."""
    return [item for item in list(get_client().releases._queue)
            if (item[1] if isinstance(item[1], str) else item[1][0]) in tasks]


def test_a_big_value_passed_on_is_dropped_by_its_producer_as_soon_as_both_holders_go(spawn_server):
    s1, s2 = spawn_server(port=0), spawn_server(port=0)
    producer = Producer(to_dist={"host": s1.host, "port": s1.port})
    consumer = Consumer(to_dist={"host": s2.host, "port": s2.port})
    n = 3 * 2**20
    f = producer.make(n)
    assert consumer.size(f) == n  # S2 fetched it from S1; the caller got a 'big' reply only
    assert f.result(timeout=30) == b"p" * n  # the owner can still read it after the consumer did
    assert _status(s1.address)["results"] == 1
    g = producer.make(n)
    assert consumer.size(g) == n
    tasks = {f._mesh_task, g._mesh_task}
    del g
    gc.collect()  # (may also collect earlier tests' futures: those report with the batch, as they should)
    # the owner's report went out at once (not with the 0.5 s batch), and S2's copy reports at once too
    assert not _queued(tasks)
    assert wait_until(lambda: _status(s1.address)["results"] == 1, timeout=10, raise_=False), _status(s1.address)
    del f
    gc.collect()
    assert not _queued(tasks)
    assert wait_until(lambda: _status(s1.address)["results"] == 0, timeout=10, raise_=False), _status(s1.address)
    assert mesh.get  # the mesh is still usable (clean_mesh shuts it down)
