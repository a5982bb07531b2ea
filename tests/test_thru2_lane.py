"""The async lanes' per-burst cuts (issue 16 target 2, helper thru2): what they must keep."""

from __future__ import annotations

from types import SimpleNamespace

from mesh.server._async_fast import _OUTLIER_RUNS, KeptLane
from mesh.server._inline import WARMUP, InlinePolicy


class _Plain:
    def back(self, x):
        return x


def _lane(policy: InlinePolicy) -> SimpleNamespace:
    return SimpleNamespace(calls=SimpleNamespace(inline=policy), outlier=None, outlier_at=0)


def _warm(policy: InlinePolicy) -> list:
    for _ in range(WARMUP):
        policy.record(_Plain, "back", 2e-6)
    hist = policy.history(_Plain, "back")
    assert policy.allows_entry(hist)
    return hist


def test_a_lone_slow_run_of_a_lane_call_does_not_send_its_method_off_the_lane():
    policy = InlinePolicy(50e-6)
    hist = _warm(policy)
    lane = _lane(policy)
    runs = hist[0]
    KeptLane._timed(lane, hist, 0.005)  # preempted once (5 ms for a 2 µs method)
    assert policy.allows_entry(hist) and hist[0] == runs + 1  # counted as a run, not as its time
    for _ in range(_OUTLIER_RUNS + 1):
        KeptLane._timed(lane, hist, 2e-6)
    KeptLane._timed(lane, hist, 0.005)  # another lone one, far from the first
    assert policy.allows_entry(hist)


def test_slow_runs_close_together_send_the_method_to_workers():
    policy = InlinePolicy(50e-6)
    hist = _warm(policy)
    lane = _lane(policy)
    KeptLane._timed(lane, hist, 0.005)
    KeptLane._timed(lane, hist, 2e-6)
    KeptLane._timed(lane, hist, 0.005)  # a second within _OUTLIER_RUNS runs: believed
    assert not policy.allows_entry(hist)


def test_a_method_slow_every_time_leaves_the_lane_one_run_later_than_before():
    policy, alone = InlinePolicy(50e-6), InlinePolicy(50e-6)
    hist, ref = _warm(policy), _warm(alone)
    lane = _lane(policy)
    before = next(k for k in range(1, 50) if (alone.add(ref, 0.0002), not alone.allows_entry(ref))[1])
    now = next(k for k in range(1, 50) if (KeptLane._timed(lane, hist, 0.0002), not policy.allows_entry(hist))[1])
    assert now == before + 1


# ------------------------------------------------------------------ a batch's replies (client I/O thread)
class _Book:
    def __init__(self) -> None:
        self.ended: list[str] = []

    def lane_ended(self, obj: str) -> None:
        self.ended.append(obj)


class _Window:
    size = 8

    def __init__(self) -> None:
        self.freed: list[tuple[str, int]] = []

    def free(self, endpoint: str, count: int = 1) -> None:
        self.freed.append((endpoint, count))


def _dealers(requests: dict) -> SimpleNamespace:
    others: list = []

    def _reply(peer, header, body, buffers, defer=None):  # the general path: counted, slot left to the batch
        others.append(header.get("re"))
        req = requests.pop(header.get("re"), None)
        if req is not None:
            req.future.set_result((header, body, buffers))
        return req is not None and req.endpoint == defer

    return SimpleNamespace(requests=requests, window=_Window(), warn=lambda *a: others.append("warn"), _reply=_reply,
                           others=others)


def test_a_batch_of_replies_completes_lane_and_plain_requests_and_frees_their_slots_once():
    import transport
    from mesh.client._async_lane import LaneReply
    from mesh.client._lean import Replied
    from transport._peer import Peer, Pending, deliver_batch

    book = _Book()
    peer = Peer("tcp://a:1", 0.0)
    requests: dict = {}
    lane = []
    for rid in (1, 2, 3):
        fut = LaneReply(book, f"o{rid}")
        fut.dealers, fut.rid, fut.endpoint, fut.frames, fut.deadline = None, rid, peer.endpoint, None, None
        owner = {"_mesh_call": fut}
        fut._owner = owner
        lane.append((fut, owner))
        requests[rid] = fut
    plain = transport.ReplyFuture()
    requests[4] = Pending(None, 4, peer.endpoint, None, plain, None)
    other = transport.ReplyFuture()
    requests[5] = Pending(None, 5, "tcp://b:2", None, other, None)  # pending on another peer
    peer.pending.update(requests)
    dealers = _dealers(requests)
    items = [({"op": "ok", "re": 1}, b"\x01"),
             ({"op": "err", "re": 2, "kind": "remote", "type": "KeyError"}, b"\xc0"),
             ({"op": "ok", "re": 3, "big": 1}, b"\xc0"),
             ({"op": "ok", "re": 4}, b"\x04"),
             ({"op": "ok", "re": 5}, b"\x05"),
             ({"op": "ok", "re": 99}, b"\x05"),  # late or unknown
             transport.FrameError("bad item")]
    deliver_batch(dealers, peer, items)
    (f1, o1), (f2, o2), (f3, o3) = lane
    assert type(o1["_mesh_call"]) is Replied and o1["_mesh_call"].body == b"\x01"  # a plain ok keeps its body alone
    assert f1.result() == ({"op": "ok"}, b"\x01", ())
    assert o2["_mesh_call"] is f2 and f2.result()[0]["op"] == "err"  # an error: the whole reply, for the codec
    assert o3["_mesh_call"] is f3 and f3.result()[0].get("big") == 1  # big: fetched by the general read
    assert plain.result() == ({"op": "ok", "re": 4}, b"\x04", [])
    assert other.result()[1] == b"\x05"  # through the general path (Dealers._reply)
    assert dealers.others == [5, 99, "warn"]
    assert book.ended == ["o1", "o2", "o3"]
    assert not requests and not peer.pending - {5}
    assert dealers.window.freed == [(peer.endpoint, 4)]  # one free for the batch's four (5 is b's)
    f1.reply({"op": "ok", "re": 1}, b"\x09")  # a second reply changes nothing
    assert f1.result()[1] == b"\x01" and book.ended == ["o1", "o2", "o3"]
