"""asyncio glue of the caller's side: ``await`` on a future, without a thread per await.

``await fut`` reads the future as :meth:`result` does, under ``no_waiting``: where the read
would block on a transport future (the call's reply, a ``result`` fetch for a big value or a
future passed from elsewhere, a forwarded future's reply), it raises ``NeedWait`` instead.
The coroutine then registers a done-callback on that transport future and suspends; the
callback runs on the I/O thread and wakes the awaiting loop with one
``call_soon_threadsafe`` per burst of replies (:class:`_Waker`: sent at the end of the I/O
thread's turn, after every reply it read, see ``mesh.client._aio_batch``), and the read starts again.
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

import concurrent.futures
import os
import sys
import threading
import time
import weakref
from typing import Any

from mesh._core import redis_results
from mesh._core.context import _local, blocking, reading_chain as _reading
from mesh._errors import Cancelled
from mesh.client._aio_batch import resolve
from mesh.client._cancel import abandon
from mesh.client._client import get_client
from mesh.client._lean import PENDING  # a future's value not read yet (mesh.client._future)

__all__ = ["PENDING", "AioFuture", "pool_read", "pooled_value", "value_of"]

asyncio: Any = None
_modules = sys.modules
_getframe = sys._getframe


async def value_of(fut: Any) -> Any:
    """The value of a mesh future (``_mesh_try_read`` as in ``mesh.client._future``), read
    without blocking the running loop."""
    done, got = fut._mesh_try_read()
    if done:
        return got
    at = fut.__dict__.get("_mesh_deadline")  # made under mesh.deadline(): the await ends by then
    with blocking(awaited=True):  # in a server coroutine: same-chain calls may enter the waiting object
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

    __slots__ = ("loop", "ident", "node", "lock", "due", "__weakref__")

    def __init__(self, loop: Any, node: Any = None) -> None:
        self.loop = weakref.ref(loop)  # (weakly: as the value of _wakers, a strong one would keep the loop forever)
        self.ident = threading.get_ident()  # made on the loop's thread (by an await or a done-callback)
        self.node = node  # whose I/O thread completes most transport futures
        self.lock = threading.Lock()
        self.due: list[Any] | None = None  # waiters to wake; None: no wake-up scheduled

    def wake(self, waiter: Any) -> None:  # any thread (usually the I/O thread)
        if threading.get_ident() == self.ident:  # the loop's own socket read the reply: wake it here
            try:
                self._wake_one(waiter)
            except RuntimeError:  # that loop is closed (its thread drives a future after asyncio.run)
                pass
            return
        with self.lock:
            if self.due is not None:
                self.due.append(waiter)
                return
            self.due = [waiter]
        node = self.node
        if node is not None and not node.closed and node.on_io_thread():
            node.call_soon(self.kick)  # at the end of this I/O turn: one wake-up for every reply it read
        else:
            self.kick()

    def kick(self) -> None:  # any thread
        try:
            loop = self.loop()
            if loop is None:
                raise RuntimeError("the loop is gone")
            loop.call_soon_threadsafe(self.flush)
        except RuntimeError:  # that loop is closed (or gone): nobody awaits there any more
            with self.lock:
                self.due = None

    def flush(self) -> None:  # the loop's thread
        with self.lock:
            due, self.due = self.due, None
        for waiter in due or ():
            self._wake_one(waiter)

    @staticmethod
    def _wake_one(waiter: Any) -> None:
        if not isinstance(waiter, asyncio.Future):  # a check of AioFuture.add_done_callback
            waiter()
        elif not waiter.done():  # cancelled meanwhile: the awaiting task went away
            waiter.set_result(None)


_wakers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_wakers_lock = threading.Lock()


def _waker(loop: Any) -> _Waker:
    waker = _wakers.get(loop)
    if waker is None:
        with _wakers_lock:
            waker = _wakers.get(loop)
            if waker is None:
                waker = _wakers[loop] = _Waker(loop, get_client().node)
    return waker


# -- the producer is unreachable and has a Redis pool: an await reads it on a thread -----------------
def pool_read(url: str, task: str, exc: BaseException, secret: Any) -> Any:
    """Read ``task`` from the Redis pool at ``url`` on a thread of its own (rare: the producer is
    unreachable), never on the loop: a future of ``(entry, None)``, or ``(None, exc)`` when Redis has
    nothing or cannot be read (the reader then gets the producer's failure ``exc``, as ``result()``)."""
    fut: concurrent.futures.Future = concurrent.futures.Future()

    def read() -> None:
        try:
            entry = redis_results.fetch(url, task, secret=secret)
        except Exception:  # noqa: BLE001 - Redis down too: report the producer's failure
            entry = None
        fut.set_result((entry, None if entry is not None else exc))

    threading.Thread(target=read, name="mesh-pool-read", daemon=True).start()
    return fut


def pooled_value(fut: Any, decode: Any) -> tuple[bool, Any]:
    """``_mesh_try_read`` of ``fut`` while its pool read is out (``(False, that read)``), or once it is back."""
    d = fut.__dict__
    pooled = d["_mesh_pooled"]
    if not pooled.done():
        return False, pooled
    d["_mesh_pooled"] = None  # used once: a failure is not cached, as in result() (the next read asks again)
    entry, exc = pooled.result()
    if entry is None:
        raise exc
    value = decode(entry, d["_mesh_address"])
    with d["_mesh_lock"]:
        if d["_mesh_value"] is PENDING:
            d["_mesh_value"] = value
    return True, d["_mesh_value"]


# -- asyncio's future protocol: gather / wait / as_completed take a mesh future as it is ---------------
class AioFuture:
    """What ``asyncio.isfuture`` asks of a future, for ``asyncio.gather``, ``wait`` and ``as_completed``.

    They would otherwise wrap every mesh future in a Task (10,000 futures: 10,000 Tasks, the
    larger part of a gather's cost); as an asyncio future it takes a done-callback instead,
    called on the loop once the value can be read without blocking (the same reads as an
    ``await``). Only for those three (``wait_for`` on a timeout would cancel the call and read
    it: it keeps a Task, as before), inside a running loop, and not inside a server's call
    (there a wait goes through an ``await``, which lets calls of the same chain re-enter).
    Cancelling a gather cancels its mesh calls (``cancel()``); ``cancelled()`` is true once
    reading the future raises :class:`mesh.Cancelled`.
    """

    __slots__ = ()

    @property
    def _asyncio_future_blocking(self) -> bool | None:
        aio = _modules.get("asyncio")
        if aio is None or _local.chain is not None or _reading.get() is not None:  # (current_chain(), inline)
            return None
        try:  # gather's own frame, the usual case (asyncio.isfuture, then _ensure_future, then gather)
            if _getframe(3).f_code in (_codes[0] if _codes else _taker_codes()):
                return False if aio._get_running_loop() is not None else None
        except ValueError:  # a shallower stack
            return None
        if aio._get_running_loop() is None:
            return None
        frame = sys._getframe(1)  # asyncio.isfuture, then ensure_future, then who asks
        for _ in range(6):
            frame = frame.f_back  # type: ignore[assignment]
            if frame is None:
                break
            code = frame.f_code
            if code.co_name in _TAKERS and code.co_filename.endswith(_TASKS):
                return False
        return None  # wait_for, shield, ensure_future...: a Task awaits it, as before

    @_asyncio_future_blocking.setter
    def _asyncio_future_blocking(self, value: Any) -> None:  # set by a Task that awaits it: not needed
        pass

    def get_loop(self) -> Any:
        """The running loop (a mesh future belongs to no loop: it serves the one asking)."""
        return _modules["asyncio"].get_running_loop()  # (asyncio is loaded: it asks)

    def cancelled(self) -> bool:
        """True once reading it raises :class:`mesh.Cancelled` (its task was cancelled: asyncio then
        raises ``CancelledError`` out of a gather, as for a cancelled child)."""
        if self.__dict__["_mesh_value"] is not PENDING:  # type: ignore[attr-defined]  # (read: gather asks twice)
            return False
        try:
            return isinstance(self.exception(), Cancelled)
        except Exception:  # noqa: BLE001 - not done yet
            return False

    def _make_cancelled_error(self) -> BaseException:
        return _module().CancelledError()

    def exception(self) -> BaseException | None:
        """The error reading the value raises, or None; ``asyncio.InvalidStateError`` while it would block."""
        d = self.__dict__  # type: ignore[attr-defined]
        if d["_mesh_value"] is not PENDING:
            return None
        if d.get("_mesh_aio_exc") is not None:
            return d["_mesh_aio_exc"]
        try:
            done, _got = self._mesh_try_read()  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - that is the answer
            return exc
        if not done:
            raise _module().InvalidStateError("the mesh future is not done yet")
        return None

    def add_done_callback(self, fn: Any, *, context: Any = None) -> None:
        """``fn(self)`` on the running loop once the value (or its error) can be read without blocking."""
        loop = _modules["asyncio"].get_running_loop()  # (asyncio is loaded: it asks)
        d = self.__dict__  # type: ignore[attr-defined]
        entry = [fn, True]
        cbs = d.get("_mesh_aio_cbs")
        if cbs is None:
            d["_mesh_aio_cbs"] = [entry]
        else:
            cbs.append(entry)
        at = d.get("_mesh_deadline")
        if at is None:  # the common case: checked with the others of this loop turn (mesh.client._aio_batch)
            resolve(loop, self, fn, context, entry)
            return
        waker = _waker(loop)

        def check() -> None:  # the loop's thread
            if not entry[1]:
                return
            try:
                if time.monotonic() >= at:
                    self.result(0)  # type: ignore[attr-defined]  # the value if it is here, else DeadlineExceeded
                    done = True
                else:
                    done, got = self._mesh_try_read()  # type: ignore[attr-defined]
            except Exception as exc:  # noqa: BLE001 - exception() reports it
                d["_mesh_aio_exc"] = exc
                done = True
            if not done:
                got.add_done_callback(lambda _f: waker.wake(check))
                return
            entry[1] = False
            entry[0] = None  # (no cycle through the callback: see mesh.client._aio_batch)
            loop.call_soon(fn, self, context=context)

        loop.call_at(at, check)
        check()

    def remove_done_callback(self, fn: Any) -> int:
        """Forget the callbacks ``fn`` (not called any more); how many there were."""
        removed = 0
        for entry in self.__dict__.get("_mesh_aio_cbs", ()):  # type: ignore[attr-defined]
            if entry[0] == fn and entry[1]:
                entry[1] = False
                removed += 1
        return removed


# asyncio functions that take a mesh future as an asyncio future: they only add done-callbacks
# (wait_for would cancel it on a timeout and read it: there it stays an awaitable a Task runs)
_TAKERS = frozenset(("gather", "wait", "as_completed"))
_TASKS = os.path.join("asyncio", "tasks.py")
_codes: list = []


def _taker_codes() -> frozenset:
    """The code objects of asyncio's gather / wait / as_completed (known by identity: no frame walk)."""
    if not _codes:
        tasks = sys.modules["asyncio"].tasks
        _codes.append(frozenset(getattr(tasks, n).__code__ for n in _TAKERS if hasattr(getattr(tasks, n, None), "__code__")))
    return _codes[0]


def _module() -> Any:
    global asyncio
    if asyncio is None:
        import asyncio as _asyncio

        asyncio = _asyncio
    return asyncio
