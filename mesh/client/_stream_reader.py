"""Streams, reader side: one reading of a stream (see ``mesh.client._stream``).

A :class:`Reader` is one ``stream`` request to the producer, answered in parts (batches of
items pushed as the generator makes them, then how it ended), decoded as they are read. It
acknowledges what it consumed (one-way ``stream_ack``), ends at its stream's deadline while the
generator has not ended, and sends its call chain so that a paused producer lets calls of that
chain into its object (no deadlock with a reader that calls back there).
"""

from __future__ import annotations

import collections
import sys
import threading
import time
import weakref
from typing import Any

import msgpack

import transport
from mesh._core import ids, stream_items, wire
from mesh._core.context import blocking, current_chain
from mesh._errors import CallTimeout, MeshError
from mesh.client._cancel import past_deadline
from mesh.client._client import get_client
from mesh.client._replies import decode_reply, interrupted, translate

__all__ = ["Reader", "set_done"]

_ACK_EVERY = 128  # items consumed between two acks, at most (and one whenever the reader caught up)


class Reader:
    """One reading of a stream: its subscription's parts as they come, decoded as they are read."""

    pending = 0  # items received, not handed out yet
    at: float | None = None  # the stream's deadline while its generator has not ended
    owner: Any = None  # the Stream read (its deadline, its call)
    chain: str | None = None  # the reader's call chain, sent with its subscription

    def __init__(self, address: str, task: str, inst: str | None, owner: Any = None, chain: str | None = None) -> None:
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
        header = {"op": wire.STREAM, "task": task, "ref": self.ref, "id": client.node.next_id(), "sess": client.session,
                  "inline": 1}  # batches of plain items may come inline (one unpackb for all)
        if inst:
            header["inst"] = inst
        self.chain = chain or current_chain()
        if self.chain is not None:  # while the producer waits for this reader, calls of its chain may enter there
            header["chain"] = self.chain
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
                waiter[0].call_soon_threadsafe(set_done, waiter[1])
            except RuntimeError:  # that loop closed
                pass

    # -- the reading thread ---------------------------------------------------------------------
    def take(self, deadline: float | None = None, *, wait: bool = True) -> Any:
        """The items that are here, decoded (a list of at least one, waiting for it); ``None`` at the
        end; ``self`` when ``wait`` is off and nothing is here yet. Say :meth:`used` once they are
        consumed (the producer's credit counts only those).

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
                return self._decoded()
            if self.finished:
                return None
            with self.cond:
                part = self.parts.popleft() if self.parts else None
                if part is None and not self.fut.done():
                    if not wait:
                        return self
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
            return None

    def next(self, deadline: float | None = None, *, wait: bool = True) -> tuple[bool, Any]:
        """One item: ``(True, item)``; ``(False, None)`` at the end; ``(False, self)`` (``wait`` off, none here)."""
        ready = self.__dict__.setdefault("ready", collections.deque())
        if not ready:
            got = self.take(deadline, wait=wait)
            if got is None or got is self:
                return False, got
            ready.extend(got)
        self.used(1)
        return True, ready.popleft()

    def _decoded(self) -> list:
        """Decode the items here (all of them, or those before one that fails: it fails next time)."""
        items, out = self.items, []
        while items:
            if type(items[0]) is _Values:  # an inline batch: decoded already
                out += items.popleft()
                continue
            body, buffers = items[0]
            try:
                if buffers:
                    raise _Ext
                value = _unpackb(body, raw=False, strict_map_key=False, ext_hook=_ext)  # plain msgpack: the fast way
            except Exception:  # noqa: BLE001 - an ext value (tuple, pickle, buffer), or malformed: the codec says which
                try:
                    value = transport.decode(body, buffers)
                except transport.CodecError as exc:
                    if out:
                        break
                    raise self._fail(MeshError(f"cannot decode an item of stream {self.task} from {self.address}: {exc}")) from None
            items.popleft()
            out.append(value)
        return out

    def used(self, count: int) -> None:
        """``count`` more items handed out by :meth:`take` were consumed: ack them (at times)."""
        self.consumed += count
        self.pending -= count
        if self.consumed - self.acked >= _ACK_EVERY or (not self.items and not self.parts):
            self._ack()

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
        inline = header.get("inline") == 1 and not buffers
        try:
            batch = _Values(stream_items.unpack_inline(body)) if inline else stream_items.unpack(body, buffers)
        except ValueError as exc:
            raise self._fail(MeshError(f"{self.address}: malformed part of stream {self.task}: {exc}")) from None
        if header.get("at") != self.consumed + self.pending:
            raise self._fail(MeshError(f"{self.address}: stream {self.task} skipped items (got item {header.get('at')!r})"))
        self.pending += len(batch)
        if inline:
            if batch:
                self.items.append(batch)
        else:
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

    async def atake(self) -> list | None:
        """As :meth:`take`, awaiting (the running loop is never blocked)."""
        aio = sys.modules["asyncio"]
        while True:
            got = self.take(wait=False)
            if got is not self:
                return got
            loop = aio.get_running_loop()
            fut = loop.create_future()
            with self.cond:
                if self.parts or self.fut.done():
                    continue
                self.waiter = (loop, fut)
            if self.at is not None:  # wake at the stream's deadline (the loop's clock is monotonic)
                timer = loop.call_at(self.at, set_done, fut)
                fut.add_done_callback(lambda _f, t=timer: t.cancel())
            with blocking(awaited=True):
                await fut


class _Values(list):
    """The items of an inline batch, decoded (one entry of ``Reader.items``)."""


class _Ext(Exception):
    """An item that is not plain msgpack: ``transport.decode`` reads it."""


def _ext(code: int, data: bytes) -> Any:
    raise _Ext


_unpackb = msgpack.unpackb


def _arrived(me: weakref.ref, part: tuple | None) -> None:
    reader = me()
    if reader is not None:
        reader.arrived(part)


def set_done(fut: Any) -> None:
    if not fut.done():
        fut.set_result(None)
