"""An ended coroutine call leaves no reference cycle: its task, coroutines and job are freed by
reference counting when the call ends, not by a later pass of the collector (which, with many
calls sleeping, walked them all first)."""

from __future__ import annotations

import gc
import threading

from mesh.server._aio import Aio, Job


def test_an_ended_coroutine_call_leaves_no_cycle_to_the_collector() -> None:
    aio = Aio("cycles")
    done = threading.Event()
    count = 200
    ended = []

    async def main() -> None:
        import asyncio

        await asyncio.sleep(0.001)
        ended.append(1)
        if len(ended) == count:
            done.set()

    gc.collect()
    was = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection frees stays in gc.garbage, for us to look at
    try:
        jobs = [Job(f"C.m{i}", None, lambda: None, lambda: None) for i in range(count)]
        for job in jobs:
            assert aio.submit(job, main)
        assert done.wait(10)
        assert aio._wait_idle(10)
        del jobs
        gc.collect()
        left = [o for o in gc.garbage if isinstance(o, Job)]
        assert left == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was:
            gc.enable()
        aio.close(1.0)
