"""asyncio glue of the caller's side: ``await`` on a future, without a thread per await.

``await fut`` reads the future as :meth:`result` does, under ``no_waiting``: where the read
would block on a transport future (the call's reply, a ``result`` fetch for a big value or a
future passed from elsewhere, a forwarded future's reply), it raises ``NeedWait`` instead.
The coroutine then registers a done-callback on that transport future and suspends; the
callback runs on the I/O thread and wakes the awaiting loop with one
``call_soon_threadsafe`` per burst of replies (:class:`_Waker`), and the read starts again.
Nothing blocks the loop and no thread is held, however many awaits are pending.

The await binds to the loop that runs it (``asyncio.get_running_loop()`` at each wait): a
future can be awaited from any loop, or read with ``result()`` from a thread meanwhile.

Inside a server coroutine (a method running on the server's loop) the whole wait is inside
``mesh._core.context.blocking()``: calls of the same call chain may enter the waiting object
(A -> B -> A), as for a worker thread that waits. The server's step wrapper gives every
step of the call the call's context, so the hooks run in it when the wait starts and ends.

Cancelling the awaiting asyncio task (``task.cancel()``, ``asyncio.wait_for``'s timeout, Ctrl-C
under ``asyncio.run()``) cancels the remote call too, when this process made it
(``mesh.client._cancel.abandon``), as asyncio cancels a future a cancelled task awaits.

asyncio is imported by the first await (``import mesh`` does not import it).
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

from mesh._core.context import blocking
from mesh.client._cancel import abandon

__all__ = ["value_of"]

asyncio: Any = None


async def value_of(fut: Any) -> Any:
    """The value of a mesh future (``_mesh_try_read`` as in ``mesh.client._future``), read
    without blocking the running loop."""
    done, got = fut._mesh_try_read()
    if done:
        return got
    at = fut.__dict__.get("_mesh_deadline")  # made under mesh.deadline(): the await ends by then
    with blocking():  # in a server coroutine: same-chain calls may enter the waiting object
        while True:
            try:
                await _ready(got, at)
            except asyncio.CancelledError:  # the awaiting task was cancelled: so is the remote call
                abandon(fut)
                raise
            if at is not None and time.monotonic() >= at:
                return fut.result(0)  # the value if it is here, else DeadlineExceeded
            done, got = fut._mesh_try_read()
            if done:
                return got


def _ready(source: Any, at: float | None = None) -> Any:
    """An asyncio future of the running loop, done when ``source`` (a transport future) is, or at
    ``at`` (``time.monotonic()``, the loop's clock)."""
    global asyncio
    if asyncio is None:
        import asyncio as _asyncio

        asyncio = _asyncio
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    waker = _waker(loop)
    source.add_done_callback(lambda _f: waker.wake(waiter))
    if at is not None:
        timer = loop.call_at(at, lambda: waiter.done() or waiter.set_result(None))
        waiter.add_done_callback(lambda _w: timer.cancel())
    return waiter


class _Waker:
    """Wakes one loop for done transport futures: one ``call_soon_threadsafe`` per burst."""

    __slots__ = ("loop", "lock", "due", "__weakref__")

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.lock = threading.Lock()
        self.due: list[Any] | None = None  # waiters to wake; None: no wake-up scheduled

    def wake(self, waiter: Any) -> None:  # any thread (usually the I/O thread)
        with self.lock:
            if self.due is not None:
                self.due.append(waiter)
                return
            self.due = [waiter]
        try:
            self.loop.call_soon_threadsafe(self.flush)
        except RuntimeError:  # that loop is closed: nobody awaits there any more
            with self.lock:
                self.due = None

    def flush(self) -> None:  # the loop's thread
        with self.lock:
            due, self.due = self.due, None
        for waiter in due or ():
            if not waiter.done():  # cancelled meanwhile: the awaiting task went away
                waiter.set_result(None)


_wakers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_wakers_lock = threading.Lock()


def _waker(loop: Any) -> _Waker:
    waker = _wakers.get(loop)
    if waker is None:
        with _wakers_lock:
            waker = _wakers.get(loop)
            if waker is None:
                waker = _wakers[loop] = _Waker(loop)
    return waker
