"""Objects for the cancellation and deadline tests (importable by server subprocesses)."""

from __future__ import annotations

import asyncio
import time

import mesh


class Worker(metaclass=mesh.RpcMeta):
    """Records what happened to its calls in ``log`` (an attribute: reading it does not wait for the mailbox)."""

    def __init__(self) -> None:
        self.log: list[str] = []

    @mesh.async_func
    def mark(self, m: str) -> str:
        self.log.append(m)
        return m

    @mesh.async_func
    def spin(self, seconds: float, tag: str = "spin") -> str:
        """A cooperative sync method: polls mesh.cancelled() and stops with check_cancelled()."""
        self.log.append(f"{tag}-start")
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                if mesh.cancelled():
                    self.log.append(f"{tag}-saw-cancel")
                    mesh.check_cancelled()
                time.sleep(0.005)
        finally:
            self.log.append(f"{tag}-end")
        return "spun"

    @mesh.async_func
    def stubborn(self, seconds: float) -> str:
        """A sync method that never checks: it runs to its end even when cancelled."""
        time.sleep(seconds)
        self.log.append("stubborn-end")
        return "done"

    async def nap(self, seconds: float, tag: str = "nap") -> str:
        self.log.append(f"{tag}-start")
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.log.append(f"{tag}-cancelled")
            raise
        finally:
            self.log.append(f"{tag}-finally")
        return "napped"

    async def relay(self, other: Worker, seconds: float, tag: str = "nap") -> str:
        """A -> B: awaits a coroutine call on ``other``."""
        return await other.nap(seconds, tag)

    async def relay2(self, mid: Worker, last: Worker, seconds: float) -> str:
        """A -> B -> C."""
        return await mid.relay(last, seconds)

    @mesh.async_func
    def sync_relay(self, other: Worker, seconds: float) -> str:
        """A sync method waiting on a sync call: the nested call is cancelled with it."""
        return other.wait_sync(seconds)

    def wait_sync(self, seconds: float) -> str:
        return _spin(self, seconds)

    async def pass_on(self, producer: Worker, consumer: Worker, seconds: float) -> str:
        """Makes a future on ``producer`` and passes it to ``consumer``, which reads it."""
        fut = producer.nap(seconds, "made")
        return await consumer.read(fut, "reader")

    async def read(self, fut: mesh.AsyncResult, tag: str) -> str:
        self.log.append(f"{tag}-start")
        try:
            return await fut
        finally:
            self.log.append(f"{tag}-finally")

    async def forward(self, other: Worker, seconds: float) -> mesh.AsyncResult:
        """Returns another call's future (a forwarded future): the caller's cancel follows it."""
        return other.nap(seconds, "forwarded")

    def time_left(self) -> float | None:
        return mesh.time_left()

    def time_left_with(self, seconds: float) -> float | None:
        with mesh.deadline(seconds):
            return mesh.time_left()

    def time_left_at(self, other: Worker) -> list:
        """Own time left, and the time left ``other`` sees for a call made from here."""
        return [mesh.time_left(), other.time_left()]

    @mesh.async_func
    def state(self) -> list:
        return [mesh.cancelled(), mesh.time_left()]


def _spin(worker: Worker, seconds: float) -> str:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if mesh.cancelled():
            worker.log.append("inner-saw-cancel")
            mesh.check_cancelled()
        time.sleep(0.005)
    return "spun"
