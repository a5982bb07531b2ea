"""aiolat2: the coroutine lane's first step runs eagerly by default, and a drain waiting for the
loop's calls to end (``Aio._wait_idle``, as ``close`` does) is still woken by the last one's end
now that ``Aio._end`` notifies only when someone waits."""

from __future__ import annotations

import threading
import time

from mesh.server import _coro_fast
from mesh.server._aio import Aio


class _Job:
    task = None


def test_the_first_step_is_eager_by_default():
    assert _coro_fast.EAGER is True


def test_the_last_end_wakes_a_waiting_drain_and_an_end_with_no_waiter_notifies_nothing():
    aio = Aio("aiolat2")
    a, b = _Job(), _Job()
    aio._jobs.update((a, b))
    aio._end(a)  # one left, no waiter: nothing to wake
    assert aio._jobs == {b}
    done: list[bool] = []
    t = threading.Thread(target=lambda: done.append(aio._wait_idle(10.0)))
    t.start()
    deadline = time.monotonic() + 10.0
    while not aio._idle._waiters and time.monotonic() < deadline:  # the drain waits on the condition
        time.sleep(0.001)
    assert aio._idle._waiters
    t0 = time.monotonic()
    aio._end(b)
    t.join(10.0)
    assert done == [True]
    assert time.monotonic() - t0 < 5.0  # woken by the end, not by its 10 s timeout
    assert not aio._jobs and b.task is None
    aio._end(_Job())  # an end with nothing left and no waiter
    assert not aio._jobs
