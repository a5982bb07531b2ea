"""Streams, reader side: ``mesh.Stream`` (the items of a ``@stream_func`` call) and the Placeholder
of an agent whose ``reply`` streams.

A ``Stream`` is a future (``(producer address, task id)``, counted as a holder like any other:
see ``mesh.client._holders``) whose value is a sequence of items. Each reading (a ``for``, an
``async for``, :meth:`Stream.result`) is a :class:`~mesh.client._stream_reader.Reader`: one ``stream`` request to the
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

import sys
import time
from typing import Any

from mesh._core import ids, wire
from mesh._core.context import current_chain, reading_chain
from mesh._errors import Cancelled, DeadlineExceeded, MeshError, RemoteError, ResultExpired
from mesh.client._cancel import abandon
from mesh.client._client import get_client
from mesh.client._future import Placeholder, _FutureMixin
from mesh.client._replies import decode_reply, wait
from mesh.client._stream_reader import Reader

__all__ = ["Stream", "StreamingPlaceholder"]

_Reader = Reader  # its former name here

class _Streaming:
    """Reading a future's task as a stream of items: ``for``, ``async for``, ``cancel()``."""

    def __iter__(self) -> Any:
        d = self.__dict__
        if d.get("_mesh_items") is not None:
            return iter(d["_mesh_items"])
        self._mesh_check_cancelled()
        chain = current_chain()
        own = chain is None  # outside any call: the loop's body gets a chain of its own
        reader = Reader(d["_mesh_address"], d["_mesh_task"], d.get("_mesh_inst"), self, chain or ids.new_chain())
        return _items(self, reader, own)

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
        if d["_mesh_exc"] is not None:  # failed for good (never sent past its deadline, ended, cancelled)
            return False
        header = {"op": wire.STREAM_STOP, "task": d["_mesh_task"]}
        address = d["_mesh_address"]
        try:
            # on the I/O thread's socket, as the call was sent: it arrives after the call, never before
            # (a stop that overtook the call found no task and said "not stopped", yet stopped it)
            client = get_client()
            fut = client.request(address, header, None, timeout=client.settings.call_timeout)
            answer = decode_reply(wait(fut, None, address), address)
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


def _items(owner: Any, reader: Reader, own: bool = False) -> Any:
    """The items of one reading (a generator: ``break`` closes it, and the reader leaves).

    ``own``: the reading's chain is set for the loop's body (calls made there carry it), until the end.
    """
    token = reading_chain.set(reader.chain) if own else None
    d = owner.__dict__
    try:
        while True:
            owner._mesh_check_cancelled()
            batch = reader.take()  # the items here now: yielded without going back to the reader each time
            if batch is None:
                d["_mesh_ended"] = True  # read to its end: done(), before its call's own reply comes
                return
            for item in batch:
                if d.get("_mesh_cancelled") or d["_mesh_exc"] is not None:
                    owner._mesh_check_cancelled()
                yield item
            reader.used(len(batch))  # read: the producer may make that many more
    finally:
        reader.close()
        _unset(token)


def _unset(token: Any) -> None:
    if token is not None:
        try:
            reading_chain.reset(token)
        except ValueError:  # finished in another context (a generator collected elsewhere)
            reading_chain.set(None)


async def _aitems(owner: Any, cached: list | None) -> Any:
    if cached is not None:
        for item in cached:
            yield item
        return
    d = owner.__dict__
    chain = current_chain()
    reader = Reader(d["_mesh_address"], d["_mesh_task"], d.get("_mesh_inst"), owner, chain or ids.new_chain())
    token = reading_chain.set(reader.chain) if chain is None else None
    try:
        while True:
            owner._mesh_check_cancelled()
            try:
                batch = await reader.atake()
            except sys.modules["asyncio"].CancelledError:  # the reading task was cancelled: so is the stream
                abandon(owner)
                raise
            if batch is None:
                d["_mesh_ended"] = True
                return
            for item in batch:
                if d.get("_mesh_cancelled") or d["_mesh_exc"] is not None:
                    owner._mesh_check_cancelled()
                yield item
            reader.used(len(batch))
    finally:
        reader.close()
        _unset(token)


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
        reader = Reader(d["_mesh_address"], d["_mesh_task"], d.get("_mesh_inst"), self)
        items = []
        try:
            while True:
                batch = reader.take(deadline)
                if batch is None:
                    break
                items += batch
                reader.used(len(batch))
        except (RemoteError, Cancelled, ResultExpired, DeadlineExceeded) as exc:  # final: a later read raises it too
            d["_mesh_exc"] = exc
            raise
        finally:
            reader.close()
        d["_mesh_items"] = items
        return items

    def done(self) -> bool:
        """True once the generator ended (all items read here, or its call's reply came) or failed."""
        d = self.__dict__
        return d.get("_mesh_items") is not None or d.get("_mesh_ended", False) or super().done()

    def _mesh_state(self) -> str:
        # its items can all be read before its call's own reply arrives: read, it is done
        d = self.__dict__
        return "done" if d.get("_mesh_items") is not None or d.get("_mesh_ended") else super()._mesh_state()

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
