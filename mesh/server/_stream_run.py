"""Token streams: running a ``@stream_func`` generator into its :class:`~mesh.server._streams.StreamState`.

A sync generator runs on the call's worker (paused by waiting, inside ``blocking()``, while it
is a window ahead of its slowest reader); an async generator runs on the server's loop (paused
by awaiting a future that an ack resolves). Stopping (``Streams.stop``) makes the next item
raise ``Cancelled`` (an async one is also cancelled at its current await), and the generator
is closed, so its ``finally`` runs.

A paused generator keeps its object (one call at a time: other calls wait until it ends), but
never deadlocks with its readers: while it waits for one, calls of that reader's call chain may
enter the object (as calls of the generator's own chain may), so a reader that calls back into
the producer's object, directly or through other agents, lets it go on. A reader sends its chain
with its subscription (a client's ``for`` loop gives the calls of its body one chain).
"""

from __future__ import annotations

import sys
import time
import types
from typing import Any

from mesh._core.context import blocking
from mesh._core.methods import STREAM_MSG
from mesh._errors import Cancelled
from mesh._msg import Msg
from mesh.server._streams import StreamState, Streams

__all__ = ["merged", "run_async", "run_sync"]


def merged(chunks: list[Any], cls_name: str) -> Msg | None:
    """The whole message of an agent's streamed reply: the last chunk's fields, the chunks'
    contents joined when they are all text (else the last chunk's content)."""
    if not chunks:
        return None
    last = chunks[-1]
    contents = [c.content for c in chunks]
    content = "".join(contents) if all(isinstance(c, str) for c in contents) else last.content
    fields = {k: v for k, v in last.to_dict().items() if k not in ("id", "timestamp", "content")}
    return Msg(content=content, **fields)


def _chunk(item: Any, cls_name: str) -> Any:
    if not isinstance(item, Msg):
        raise TypeError(f"{cls_name}.reply streams Msg chunks, but it yielded {type(item).__name__}: yield Msg(self.name, text)")
    return item


class _Readers:
    """While a generator is paused: the call chains of its readers may enter its object."""

    def __init__(self, state: StreamState) -> None:
        self.state = state
        self.chains: set[str] = set()

    def let_in(self) -> None:
        """Let in the chains of readers subscribed now (caller holds ``state.cond``)."""
        host = self.state.host
        if host is None:
            return
        actor, submit = host
        for sub in self.state.subs.values():
            chain = sub.chain
            if chain is not None and chain not in self.chains:
                self.chains.add(chain)
                for call in actor.block(chain):  # its calls already queued there run now
                    submit(actor, call)

    def close(self) -> None:
        if self.chains:
            actor = self.state.host[0]
            for chain in self.chains:
                actor.unblock(chain)
            self.chains.clear()


_IDLE = 0.001  # s since the generator's previous item: then the I/O thread is idle, and gets its turn
_FIRST_WAIT = 0.005  # s a generator waits at most for the push of an item it made after a pause


def _let_push(state: StreamState) -> None:
    """Let the I/O thread push what is pending now, before the generator goes on.

    Done for an item made after a pause (not for the next ones: waiting for each push would cost
    more than it gives). Without it, a generator that makes items without pausing holds the GIL,
    and the I/O thread gets it only at the interpreter's switch interval (5 ms): the first item
    would reach its readers that much later.
    """
    with state.cond:
        if state.flushing and state.subs:
            pushed, end = state.pushed, time.monotonic() + _FIRST_WAIT
            while state.pushed == pushed and not state.stopping and (left := end - time.monotonic()) > 0:
                state.cond.wait(left)  # until that push was sent (Streams._push notifies)


def _wait_room(streams: Streams, state: StreamState) -> None:
    readers = _Readers(state)
    try:
        with blocking():  # a paused generator frees its worker's slot (and lets its call chain re-enter)
            with state.cond:
                while not state.stopping and state.full(streams.window, streams.window_bytes):
                    readers.let_in()
                    state.cond.wait(1.0)
                if state.stopping:
                    raise Cancelled("the stream was stopped")
    finally:
        readers.close()


async def _await_room(streams: Streams, state: StreamState) -> None:
    readers = _Readers(state)
    try:
        while True:
            with state.cond:
                if state.stopping:
                    raise Cancelled("the stream was stopped")
                if not state.full(streams.window, streams.window_bytes):
                    return
                readers.let_in()
                waiter = state.waiter = state.loop.create_future()
            with blocking(awaited=True):
                await waiter
    finally:
        readers.close()


def run_sync(streams: Streams, state: StreamState, value: Any, merge: str | None = None) -> Any:
    """Run a sync generator (on the calling worker) into ``state``; the call's value.

    ``merge``: the agent's class name when the items are a reply's chunks: the value is then
    the whole message (see :func:`merged`), else the number of items.
    """
    if type(value) is types.AsyncGeneratorType:
        value.aclose().close()
        raise TypeError("an async generator must be defined with async def ... yield to stream")
    it = value if hasattr(value, "__next__") else iter(value)
    chunks: list[Any] = []
    last = 0.0
    try:
        for item in it:
            if merge is not None:
                chunks.append(_chunk(item, merge))
            if streams.put(state, item):
                _wait_room(streams, state)
            now = time.monotonic()
            if now - last > _IDLE and state.flushing:
                _let_push(state)
            last = now
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()  # stopped early: the generator's finally runs here
    return merged(chunks, merge) if merge is not None else len(state.items)


async def run_async(streams: Streams, state: StreamState, value: Any, merge: str | None = None) -> Any:
    """Run an async generator (on the server's loop) into ``state``; the call's value."""
    aio = sys.modules["asyncio"]  # imported by the loop that runs this
    state.loop = aio.get_running_loop()
    state.atask = aio.current_task()
    if type(value) is types.CoroutineType:
        value = await value
    chunks: list[Any] = []
    try:
        if hasattr(value, "__anext__"):
            while True:
                try:
                    item = await value.__anext__()
                except StopAsyncIteration:
                    break
                if merge is not None:
                    chunks.append(_chunk(item, merge))
                streams.put(state, item)
                await _await_room(streams, state)
        else:
            for item in value:
                if merge is not None:
                    chunks.append(_chunk(item, merge))
                streams.put(state, item)
                await _await_room(streams, state)
    except aio.CancelledError:
        if state.stopping:
            raise Cancelled("the stream was stopped") from None
        raise
    finally:
        state.atask = None
        aclose = getattr(value, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except RuntimeError:  # already running its finally (cancelled inside it)
                pass
    return merged(chunks, merge) if merge is not None else len(state.items)


def merge_of(obj: Any, method: str) -> str | None:
    """The class name when the stream is an agent's reply (its chunks make one Msg), else None."""
    methods = getattr(type(obj), "_mesh_methods", None) or {}
    return type(obj).__name__ if methods.get(method) == STREAM_MSG else None
