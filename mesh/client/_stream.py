"""Streams, reader side: ``mesh.Stream`` (the items of a ``@stream_func`` call) and the Placeholder
of an agent whose ``reply`` streams.

A ``Stream`` is a future (``(producer address, task id)``, counted as a holder like any other:
see ``mesh.client._holders``) whose value is a sequence of items. Each reading (a ``for``, an
``async for``, :meth:`Stream.result`) is a :class:`_Reader`: one ``stream`` request to the
producer, answered in parts: the producer pushes the items as its generator makes them, in
batches, then ends the request with how the generator ended. Nothing is fetched until a reader
starts, so a caller that only passes a stream on receives none of its items: whoever reads it
subscribes straight to the producer, from the first item.

The reader acknowledges what it consumed (one-way ``stream_ack``): the producer sends at most a
window past that, and its generator waits while it is that far ahead of its slowest reader.
A reader dropped before the end (``break`` out of a ``for``) tells the producer it leaves.

A stream made under ``mesh.deadline()`` (the call's future keeps ``_mesh_deadline``): while its
generator has not ended, every read ends at the deadline with ``DeadlineExceeded``, even if the
producer cannot be reached; a stream that ended in time is read whole whenever it is read.
Cancelling the asyncio task of an ``async for`` / ``await stream`` cancels the stream (when this
process made the call: ``mesh.client._cancel.abandon``); Ctrl-C in a ``for`` / ``result()`` runs
the Ctrl-C cancel of ``mesh.client._replies``.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
import weakref
from typing import Any

import transport
from mesh._core import ids, stream_items, wire
from mesh._core.context import blocking
from mesh._errors import CallTimeout, Cancelled, DeadlineExceeded, MeshError, RemoteError, ResultExpired
from mesh.client._cancel import abandon, past_deadline
from mesh.client._client import get_client
from mesh.client._future import Placeholder, _FutureMixin
from mesh.client._replies import decode_reply, interrupted, translate

__all__ = ["Stream", "StreamingPlaceholder"]

_ACK_EVERY = 128  # items consumed between two acks, at most (and one whenever the reader caught up)


class _Reader:
    """One reading of a stream: its subscription's parts as they come, decoded as they are read."""

    def __init__(self, address: str, task: str, inst: str | None, owner: Any = None) -> None:
        self.address = address
        self.task = task
        # the stream's deadline (mesh.deadline() around the call), while its call is unanswered
        self.owner = owner
        self.at = None if owner is None else owner.__dict__.get("_mesh_deadline")
        self.ref = ids.new_chain()
        self.cond = threading.Condition(threading.Lock())
        self.parts: collections.deque[tuple] = collections.deque()
        self.items: collections.deque[tuple] = collections.deque()  # (body, buffers) not yet decoded
        self.consumed = 0
        self.acked = 0
        self.waiter: Any = None  # (loop, asyncio future) of an async reader waiting for a part
        self.finished = False  # the end was read (or the reading failed)
        client = self.client = get_client()
        client.own(address)  # our lease keeps our subscription (and the items held for it) alive
        header = {"op": wire.STREAM, "task": task, "ref": self.ref, "id": client.node.next_id(), "sess": client.session}
        if inst:
            header["inst"] = inst
        me = weakref.ref(self)
        self.fut = client.node.request(address, header, wire.NIL, (), on_part=lambda part: _arrived(me, part))
        self.fut.add_done_callback(lambda _f: _arrived(me, None))

    # -- the I/O thread -------------------------------------------------------------------------
    def arrived(self, part: tuple | None) -> None:
        with self.cond:
            if part is not None:
                self.parts.append(part)
            self.cond.notify_all()
            waiter, self.waiter = self.waiter, None
        if waiter is not None:
            try:
                waiter[0].call_soon_threadsafe(_set_done, waiter[1])
            except RuntimeError:  # that loop closed
                pass

    # -- the reading thread ---------------------------------------------------------------------
    def next(self, deadline: float | None = None, *, wait: bool = True) -> tuple[bool, Any]:
        """``(True, item)``; ``(False, None)`` at the end; ``(False, self)`` when ``wait`` is off and nothing is here yet.

        Raises:
            RemoteError: the generator raised (after the items it made before).
            DeadlineExceeded: the stream's own deadline passed before its generator ended.
            CallTimeout: ``deadline`` passed first.
            MeshError: the producer failed, was lost, or sent something malformed.
        """
        while True:
            if self.at is not None and self._late():
                raise self._fail(past_deadline(self.owner))
            if self.items:
                body, buffers = self.items.popleft()
                try:
                    value = transport.decode(body, buffers)
                except transport.CodecError as exc:
                    raise self._fail(MeshError(f"cannot decode an item of stream {self.task} from {self.address}: {exc}")) from None
                self.consumed += 1
                if self.consumed - self.acked >= _ACK_EVERY or (not self.items and not self.parts):
                    self._ack()
                return True, value
            if self.finished:
                return False, None
            with self.cond:
                part = self.parts.popleft() if self.parts else None
                if part is None and not self.fut.done():
                    if not wait:
                        return False, self
                    until = deadline if self.at is None or (deadline is not None and deadline < self.at) else self.at
                    left = None if until is None else until - time.monotonic()
                    if left is not None and left <= 0:
                        if until is not deadline:
                            continue  # the stream's deadline: checked at the top
                        raise CallTimeout(f"no item of stream {self.task} from {self.address} within the timeout")
                    with blocking():  # a server worker reading a stream frees its slot meanwhile
                        try:
                            self.cond.wait(left)
                        except KeyboardInterrupt:  # Ctrl-C: what this process started is cancelled
                            interrupted()
                            raise
                    continue
            if part is not None:
                self._take(part)
                continue
            self.finished = True
            self._end()
            return False, None

    def _late(self) -> bool:
        """The stream's deadline passed, and its generator did not end in time (or failed)."""
        if time.monotonic() < self.at:  # type: ignore[operator]
            return False
        call = self.owner.__dict__.get("_mesh_call")
        if call is not None and call.done():
            try:
                in_time = call.result()[0].get("op") == wire.OK
            except BaseException:  # noqa: BLE001 - a failed call: the deadline error stands
                in_time = False
            if in_time:  # ended before its deadline: read whole, whenever
                self.at = None
                return False
        return True

    def _take(self, part: tuple) -> None:
        header, body, buffers = part
        try:
            batch = stream_items.unpack(body, buffers)
        except ValueError as exc:
            raise self._fail(MeshError(f"{self.address}: malformed part of stream {self.task}: {exc}")) from None
        if header.get("at") != self.consumed + len(self.items):
            raise self._fail(MeshError(f"{self.address}: stream {self.task} skipped items (got item {header.get('at')!r})"))
        self.items.extend(batch)

    def _end(self) -> None:
        """How the stream ended: nothing for an ``ok``, else its error."""
        try:
            reply = self.fut.result()
        except BaseException as exc:
            raise translate(exc) from None
        decode_reply(reply, self.address)

    def _fail(self, exc: BaseException) -> BaseException:
        self.close()
        self.finished = True
        return exc

    def _ack(self, close: bool = False) -> None:
        self.acked = self.consumed
        header = {"op": wire.STREAM_ACK, "task": self.task, "ref": self.ref, "at": self.consumed, "sess": self.client.session}
        if close:
            header["close"] = 1
        self.client.node.send(self.address, header)

    def close(self) -> None:
        """Leave before the end: the producer stops pushing to this reader."""
        if not self.fut.done():
            self._ack(close=True)

    def __del__(self) -> None:
        try:
            if not self.finished:
                self.close()
        except Exception:  # never raise from a finalizer
            pass

    async def anext(self) -> tuple[bool, Any]:
        """As :meth:`next`, awaiting (the running loop is never blocked)."""
        aio = sys.modules["asyncio"]
        while True:
            got = self.next(wait=False)
            if got[1] is not self:
                return got
            loop = aio.get_running_loop()
            fut = loop.create_future()
            with self.cond:
                if self.parts or self.fut.done():
                    continue
                self.waiter = (loop, fut)
            if self.at is not None:  # wake at the stream's deadline (the loop's clock is monotonic)
                timer = loop.call_at(self.at, _set_done, fut)
                fut.add_done_callback(lambda _f, t=timer: t.cancel())
            with blocking():
                await fut


def _arrived(me: weakref.ref, part: tuple | None) -> None:
    reader = me()
    if reader is not None:
        reader.arrived(part)


def _set_done(fut: Any) -> None:
    if not fut.done():
        fut.set_result(None)


class _Streaming:
    """Reading a future's task as a stream of items: ``for``, ``async for``, ``cancel()``."""

    def __iter__(self) -> Any:
        d = self.__dict__
        if d.get("_mesh_items") is not None:
            return iter(d["_mesh_items"])
        self._mesh_check_cancelled()
        return _items(self, _Reader(d["_mesh_address"], d["_mesh_task"], d.get("_mesh_inst"), self))

    def __aiter__(self) -> Any:
        d = self.__dict__
        self._mesh_check_cancelled()
        return _aitems(self, d.get("_mesh_items"))

    def cancel(self) -> bool:
        """Stop the producer's generator (it is closed: its ``finally`` runs).

        Returns:
            True if it was stopped before it finished; reading the stream then raises ``mesh.Cancelled``.
        """
        d = self.__dict__
        header = {"op": wire.STREAM_STOP, "task": d["_mesh_task"]}
        try:
            answer = get_client().call(d["_mesh_address"], header, None, timeout=get_client().settings.call_timeout)
        except MeshError:
            return False
        stopped = bool(isinstance(answer, dict) and answer.get("stopped"))
        if stopped:
            d["_mesh_cancelled"] = True
        return stopped

    def _mesh_check_cancelled(self) -> None:
        d = self.__dict__
        if d.get("_mesh_cancelled"):
            raise Cancelled(f"stream {d['_mesh_task']} was cancelled")
        if isinstance(d["_mesh_exc"], (Cancelled, DeadlineExceeded)):  # kept: every later read raises it too
            raise d["_mesh_exc"]


def _items(owner: Any, reader: _Reader) -> Any:
    """The items of one reading (a generator: ``break`` closes it, and the reader leaves)."""
    try:
        while True:
            owner._mesh_check_cancelled()
            more, item = reader.next()
            if not more:
                return
            yield item
    finally:
        reader.close()


async def _aitems(owner: Any, cached: list | None) -> Any:
    if cached is not None:
        for item in cached:
            yield item
        return
    d = owner.__dict__
    reader = _Reader(d["_mesh_address"], d["_mesh_task"], d.get("_mesh_inst"), owner)
    try:
        while True:
            owner._mesh_check_cancelled()
            try:
                more, item = await reader.anext()
            except sys.modules["asyncio"].CancelledError:  # the reading task was cancelled: so is the stream
                abandon(owner)
                raise
            if not more:
                return
            yield item
    finally:
        reader.close()


class Stream(_Streaming, _FutureMixin):
    """The items of a ``@stream_func`` call on a remote object, pushed as the generator makes them.

    ``for item in stream`` / ``async for item in stream`` read them in order as they come (each
    loop reads from the first item); ``result(timeout=None)`` and ``await stream`` give the list
    of all items once the generator ended; ``done()``; ``cancel()``. Passed to another remote
    call it travels as a reference: the consumer reads it straight from the producer.
    """

    _mesh_kind = "a Stream"

    def result(self, timeout: float | None = None) -> list:
        """Wait for the end of the stream and return all its items.

        Raises:
            RemoteError: the generator raised.
            Cancelled: the stream was cancelled.
            CallTimeout: not finished within ``timeout``.
            ResultExpired: the producer no longer holds its items.
        """
        d = self.__dict__
        if d.get("_mesh_items") is not None:
            return d["_mesh_items"]
        if d["_mesh_exc"] is not None:
            raise d["_mesh_exc"]
        self._mesh_check_cancelled()
        deadline = None if timeout is None else time.monotonic() + timeout
        reader = _Reader(d["_mesh_address"], d["_mesh_task"], d.get("_mesh_inst"), self)
        items = []
        try:
            while True:
                more, item = reader.next(deadline)
                if not more:
                    break
                items.append(item)
        except (RemoteError, Cancelled, ResultExpired, DeadlineExceeded) as exc:  # final: a later read raises it too
            d["_mesh_exc"] = exc
            raise
        finally:
            reader.close()
        d["_mesh_items"] = items
        return items

    def __await__(self) -> Any:
        return self._mesh_collect().__await__()

    async def _mesh_collect(self) -> list:
        d = self.__dict__
        if d.get("_mesh_items") is not None:
            return d["_mesh_items"]
        if d["_mesh_exc"] is not None:
            raise d["_mesh_exc"]
        items = [item async for item in self]
        d["_mesh_items"] = items
        return items

    def _mesh_try_read(self) -> tuple[bool, Any]:
        raise TypeError("a Stream is read with result(), for, async for or await")

    def __reduce__(self) -> tuple:
        fn, args = super().__reduce__()
        if len(args) == 6 and type(args[0]) is bool:  # a reference (not a value edited here)
            return (_rebuild, (False, *args[1:]))
        return fn, args

    def __repr__(self) -> str:
        d = self.__dict__
        state = "done" if d.get("_mesh_items") is not None else "cancelled" if d.get("_mesh_cancelled") else (
            "failed" if d["_mesh_exc"] is not None else "open")
        return f"<Stream {state} task={d['_mesh_task']} producer={d['_mesh_address']}>"


class StreamingPlaceholder(_Streaming, Placeholder):
    """The reply of an agent whose ``reply`` is a ``@stream_func``: a :class:`~mesh.Placeholder`
    (reading a field waits for the whole message) that can also be iterated for the chunks
    (``for chunk in reply`` / ``async for``), each a ``Msg``, as the agent yields them."""

    _mesh_kind = "a Placeholder"
    __hash__ = object.__hash__

    def __reduce__(self) -> tuple:
        fn, args = super().__reduce__()
        if len(args) == 6 and type(args[0]) is bool:
            return (_rebuild, (True, *args[1:]))
        return fn, args


def _rebuild(
    chunks: bool, address: str, task: str, pool: str | None = None, ref: str | None = None, inst: str | None = None
) -> Any:
    cls = StreamingPlaceholder if chunks else Stream
    fut = cls.__new__(cls)
    fut._mesh_init(address, task, None, pool, ref, inst)
    if ref is not None:
        get_client()  # a borrower reports through this process's client (see mesh.client._future)
    return fut
