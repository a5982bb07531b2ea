"""The hosted loop's lean scheduling (transport._hosted.HostedLoop): timers kept by the millisecond.

The loop here runs on a plain selector (no I/O loop): what is tested is the scheduling only.
"""

from __future__ import annotations

import asyncio
import contextvars
import selectors

import pytest

from transport._hosted import HostedLoop


@pytest.fixture
def loop():
    lp = HostedLoop(selectors.DefaultSelector())
    yield lp
    lp.close()


def test_timers_run_in_time_order_never_early_and_cancelled_ones_never(loop: HostedLoop) -> None:
    ran: list = []

    async def main() -> None:
        t0 = loop.time()
        # times spread over a few ms, many per millisecond, made out of order
        offsets = [((i * 37) % 400) / 10_000 for i in range(400)]
        for off in offsets:
            loop.call_at(t0 + off, lambda off=off: ran.append((off, loop.time() - t0)))
        gone = [loop.call_later(0.01, ran.append, "cancelled") for _ in range(5)]
        for h in gone:
            h.cancel()
        victim = loop.call_at(t0 + 0.0305, ran.append, "cancelled by an earlier timer")
        loop.call_at(t0 + 0.0301, victim.cancel)  # (the same millisecond: it runs first)
        await asyncio.sleep(0.06)

    loop.run_until_complete(main())
    assert "cancelled" not in ran and "cancelled by an earlier timer" not in ran
    offs = [off for off, _ in ran]
    assert offs == sorted(offs) and len(offs) == 400
    assert all(at >= off for off, at in ran)  # never before its time
    assert not loop._buckets and not loop._scheduled  # nothing left behind


def test_a_bucket_whose_timers_are_all_cancelled_leaves_the_heap(loop: HostedLoop) -> None:
    async def main() -> None:
        handles = [loop.call_later(3600, lambda: None) for _ in range(10)]
        assert len(loop._scheduled) >= 1 and loop._buckets
        for h in handles:
            h.cancel()
            h.cancel()  # twice: nothing more happens
        assert not loop._buckets
        assert loop._timer_cancelled_count >= 1  # asyncio cleans its heap of the bucket's entry
        assert handles[0].cancelled() and handles[0].when() > loop.time()

    loop.run_until_complete(main())


def test_asyncio_timeouts_current_task_and_fifo_callbacks_work(loop: HostedLoop) -> None:
    order: list = []

    async def main() -> None:
        assert asyncio.current_task() is not None
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02):
                await asyncio.sleep(5)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.sleep(5), 0.02)
        for i in range(5):
            loop.call_soon(order.append, i)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        t = loop.time()
        await asyncio.sleep(0.002)
        assert loop.time() - t >= 0.002

    loop.run_until_complete(main())
    assert order == [0, 1, 2, 3, 4]


def test_an_error_in_a_timer_goes_to_the_handler_and_its_bucket_still_runs(loop: HostedLoop) -> None:
    seen: list = []
    ran: list = []
    loop.set_exception_handler(lambda lp, ctx: seen.append(ctx.get("exception")))

    def boom() -> None:
        raise ValueError("boom")

    async def main() -> None:
        t0 = loop.time()
        loop.call_at(t0 + 0.0051, boom)
        loop.call_at(t0 + 0.0052, ran.append, 1)
        await asyncio.sleep(0.02)

    loop.run_until_complete(main())
    assert ran == [1] and len(seen) == 1 and isinstance(seen[0], ValueError)


def test_debug_mode_uses_asyncios_own_scheduling(loop: HostedLoop) -> None:
    loop.set_debug(True)
    ran: list = []

    async def main() -> None:
        h = loop.call_later(0.001, ran.append, "t")
        assert type(h) is asyncio.TimerHandle
        assert type(loop.call_soon(ran.append, "s")) is asyncio.Handle
        await asyncio.sleep(0.01)

    loop.run_until_complete(main())
    assert sorted(ran) == ["s", "t"]


# asyncio.sleep's timer (NOTES-sleep2.md): made with no context copy, run inline by its bucket
_wake = asyncio.futures._set_result_unless_cancelled
var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


def test_sleeps_wake_in_time_order_keep_their_context_and_cancel(loop: HostedLoop) -> None:
    woke: list = []

    async def nap(i: int, d: float) -> None:
        var.set(f"task {i}")
        t0 = loop.time()
        assert await asyncio.sleep(d, result=i) == i
        assert loop.time() - t0 >= d  # never early
        assert var.get() == f"task {i}"  # the task's context, not the timer's (it has none)
        woke.append(i)

    async def main() -> None:
        tasks = [asyncio.ensure_future(nap(i, (i % 7) / 1000)) for i in range(50)]
        gone = asyncio.ensure_future(asyncio.sleep(0.005))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.gather(*tasks)
        with pytest.raises(asyncio.CancelledError):
            await gone

    loop.run_until_complete(main())
    assert sorted(woke) == list(range(50))
    assert not loop._buckets and not loop._scheduled


def test_a_sleep_timer_has_no_context_and_the_others_keep_asyncio_s(loop: HostedLoop) -> None:
    fut = loop.create_future()
    fast = loop.call_later(1, _wake, fut, 3)
    assert fast._context is None
    ctx = contextvars.copy_context()
    for other in (loop.call_later(1, _wake, fut, 3, context=ctx), loop.call_later(1, _wake, fut),
                  loop.call_later(1, print, fut, 3)):
        assert other._context is not None
        other.cancel()
    fast.cancel()
    assert not loop._buckets


def test_an_error_in_an_inline_timer_reaches_the_handler_and_the_bucket_goes_on(loop: HostedLoop) -> None:
    seen: list = []
    loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx["exception"]))
    done = loop.create_future()
    done.set_result(0)  # set_result again: InvalidStateError, in the timer
    later = loop.create_future()

    async def main() -> None:
        when = loop.time() + 0.002
        loop.call_at(when, _wake, done, 1)
        loop.call_at(when, _wake, later, 2)  # the same millisecond, after the failing one
        assert await later == 2

    loop.run_until_complete(main())
    assert len(seen) == 1 and isinstance(seen[0], asyncio.InvalidStateError)


def test_a_stop_in_a_bucket_leaves_the_rest_runnable_with_a_context(loop: HostedLoop) -> None:
    futs = [loop.create_future() for _ in range(3)]

    def stop() -> None:
        raise KeyboardInterrupt

    async def main() -> None:
        when = loop.time() + 0.002
        loop.call_at(when, stop)
        for f in futs:
            loop.call_at(when, _wake, f, 1)  # (the same time: after the stop, in the order made)
        await asyncio.sleep(0.01)

    with pytest.raises(KeyboardInterrupt):
        loop.run_until_complete(main())
    rest = list(loop._ready)
    assert rest and all(h._context is not None for h in rest)
    loop.run_until_complete(asyncio.gather(*futs))
    assert [f.result() for f in futs] == [1, 1, 1]
