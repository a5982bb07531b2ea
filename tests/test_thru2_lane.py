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
