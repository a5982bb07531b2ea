"""Token streams, producer side: the items a ``@stream_func`` generator made, pushed to its readers.

A call with ``stream: 1`` opens a :class:`StreamState` under its task id before it runs. The
generator then runs as the call (a sync one on its worker, an async one on the server's loop),
and each item it yields is encoded once and kept. A reader subscribes with op ``stream``
(``task``, its own ``ref``, ``from``): items are *pushed* to it as partial replies of that
request (``more: 1``, ``at`` = index of the batch's first item; see ``mesh._core.stream_items``),
then one last reply ends it (``ok`` with ``end`` = the number of items, or the generator's
error). Every reader gets every item from ``from`` on, in order; items are batched per push.

Back-pressure (credit): a reader acknowledges what it consumed (one-way ``stream_ack``, ``at``);
it is never sent more than :data:`WINDOW` items (or :data:`WINDOW_BYTES` bytes) past what it
acknowledged, and the generator is paused (its thread waits, or its task awaits) while it is
that far ahead of the slowest reader (of the furthest any reader got, when none is subscribed).

Items are kept for readers to come (every reader reads from the start) until no holder of the
task is left (the release protocol: :meth:`Streams.drop`, from ``Results``), its session ends
with nobody holding it, or its stored result expires. All streams of a server keep at most
``budget`` bytes (the pool's byte budget); past it, items every current reader has consumed are
dropped, oldest stream first (a reader that later asks for them gets ``expired``).

No holder left while the generator runs (every reader's process gone: their leases ran out):
the generator is closed at its next item (its ``finally`` runs). :meth:`Streams.stop` does the
same on request (``stream_stop``, ``Stream.cancel()``): it is the one place a stream's
generator is stopped, for the generic cancel operation too.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_right
from collections import OrderedDict
from typing import Any, Callable


import transport
from mesh._core import stream_items, wire
from mesh._core.options import env_count
from mesh._core.stream_items import MAX_ITEMS
from mesh._core.wire import Entry
from mesh._errors import Cancelled
from mesh.server._stream_state import StreamState, _Sub

__all__ = ["WINDOW", "WINDOW_BYTES", "StreamState", "Streams"]  # StreamState: from mesh.server._stream_state

# items a generator may be ahead of its slowest reader (small items: fewer pauses for acks; the
# bytes bound below is what bounds memory)
WINDOW = env_count("MESH_STREAM_WINDOW", 16384)
WINDOW_BYTES = env_count("MESH_STREAM_WINDOW_BYTES", 8 << 20)  # and bytes
BATCH_BYTES = 1 << 20  # bytes of items in one push (a larger item goes alone)
SUBS_MAX = 1024  # readers subscribed to one stream at once
_EARLY_GRACE = 5.0  # s a subscription waits for a call this server has not seen yet
_EARLY_MAX = 10_000
_SEEN_MAX = 100_000
_ITEM_OVERHEAD = 64  # bytes an item costs besides its encoding
_INLINE = 64 * 1024  # bytes and str shorter than this are plain msgpack (transport.encode's threshold)
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


class Streams:
    """The streams of one server (thread-safe: the I/O thread, workers and the loop)."""

    def __init__(self, budget: int = 1 << 30, window: int = WINDOW, window_bytes: int = WINDOW_BYTES) -> None:
        self.budget = budget
        self.window = max(1, window)
        self.window_bytes = max(1, window_bytes)
        self.states: dict[str, StreamState] = {}
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._early: dict[str, list[tuple[float, dict, Callable]]] = {}
        self.io_ident: int | None = None
        self.call_soon: Callable[..., None] = lambda fn, *args: fn(*args)  # the I/O thread's (set by the host)

    def get(self, task: Any) -> StreamState | None:
        return self.states.get(task)

    # -- a stream's life ---------------------------------------------------------------------------
    def open(self, task: str) -> None:
        """A streaming call of ``task`` arrived (I/O thread): readers may subscribe from now on."""
        with self._lock:
            if task in self.states:
                return
            state = self.states[task] = StreamState(task)
            self._seen[task] = None
            if len(self._seen) > _SEEN_MAX:
                self._seen.popitem(last=False)
            early = self._early.pop(task, ())
        for _, header, reply in early:
            self._subscribe(state, header, reply)

    def finish(self, task: str, entry: Entry) -> None:
        """The call of ``task`` ended with ``entry`` (its value, or why it failed)."""
        state = self.states.get(task)
        if state is None:
            return
        with state.cond:
            if state.end is None:
                state.end = entry
            state.wake()
        self._push_soon(state)
        if state.dropped:
            self._forget(state)

    def stop(self, task: str) -> bool:
        """Stop the generator of ``task`` (closed at its next item; an async one at its next await).

        Returns:
            True if it was still running, so it stops before it finished.
        """
        state = self.states.get(task)
        if state is None:
            return False
        with state.cond:
            if state.end is not None or state.stopping:
                return False
            state.stopping = True
            state.wake()
            atask, loop = state.atask, state.loop
        if atask is not None and loop is not None:
            try:
                loop.call_soon_threadsafe(atask.cancel)
            except RuntimeError:
                pass
        return True

    def drop(self, task: str) -> None:
        """No holder of ``task`` is left: stop its generator, and forget its items once it ended."""
        state = self.states.get(task)
        if state is None:
            return
        state.dropped = True
        self.stop(task)
        if state.end is not None:
            self._forget(state)

    def _forget(self, state: StreamState) -> None:
        with self._lock:
            if self.states.get(state.task) is not state:
                return
            del self.states[state.task]
        with state.cond:
            subs = list(state.subs.values())
            state.subs.clear()
            state.items.clear()
            state.nbytes = 0
        for sub in subs:  # copies nobody counted (pickled elsewhere): the items are gone
            sub.reply(_expired(state.task))

    def end_session(self, sess: str) -> None:
        """A reader's process is gone: stop pushing to its subscriptions."""
        for state in list(self.states.values()):
            with state.cond:
                gone = [ref for ref, s in state.subs.items() if s.sess == sess]
                for ref in gone:
                    del state.subs[ref]
                if gone:
                    state.wake()

    def prune(self, has_result: Callable[[str], bool]) -> None:
        """Forget ended streams whose result the pool no longer holds (expired, evicted)."""
        for state in list(self.states.values()):
            if state.end is not None and not state.subs and not has_result(state.task):
                self._forget(state)

    # -- the producer ------------------------------------------------------------------------------
    def put(self, state: StreamState, item: Any) -> bool:
        """Keep one item and push it. True if the generator must now wait for room (the window is full)."""
        kind = type(item)
        if (kind is bytes or kind is str) and len(item) < _INLINE or kind is float or kind is bool or item is None or (
            kind is int and _INT_MIN <= item <= _INT_MAX
        ):
            body = state.pack(item)  # as transport.encode would
            entry, size = (body, ()), len(body) + _ITEM_OVERHEAD
        else:
            body, buffers = transport.encode(item)
            buffers = [b if type(b) is bytes else bytes(b) for b in buffers]
            entry, size = (body, buffers), len(body) + sum(len(b) for b in buffers) + _ITEM_OVERHEAD
            state.framed += bool(buffers)
            state.plain = False
        with state.lock:  # (the lock of state.cond: the plain lock's with is cheaper)
            if state.stopping:
                raise Cancelled("the stream was stopped")
            cum = state.cum
            state.items.append(entry)
            total = cum[-1] + size
            cum.append(total)
            state.nbytes += size
            if state.flushing or not state.subs:
                push = False
            else:
                push = state.flushing = True
            n, low = len(cum) - 1, state.low
            full = n - low >= self.window or total - cum[low] >= self.window_bytes
        if push:
            self.call_soon(self._push, state)
        if (state.nbytes > self.budget or not n & 255) and sum(st.nbytes for st in list(self.states.values())) > self.budget:
            self._trim()
        return full

    def _trim(self) -> None:
        """Past the byte budget: drop items every current reader consumed, oldest stream first."""
        states = list(self.states.values())
        kept = sum(st.nbytes for st in states)
        for state in states:
            if kept <= self.budget:
                return
            with state.cond:
                low = state.slowest()
                for i in range(state.base, low):
                    state.items[i] = None
                freed = state.cum[low] - state.cum[state.base] if low > state.base else 0
                state.base = max(state.base, low)
                state.nbytes -= freed
                state.relow()
            kept -= freed

    # -- readers (I/O thread) ----------------------------------------------------------------------
    def subscribe(self, header: dict, reply: Callable[[Entry], None]) -> None:
        """Op ``stream``: push ``task``'s items from ``from`` on to this reader, then how it ended."""
        task = header["task"]
        state = self.states.get(task)
        if state is None:
            with self._lock:
                state = self.states.get(task)
                if state is None:
                    if task in self._seen or len(self._early) >= _EARLY_MAX:
                        reply(_expired(task))
                        return
                    # not arrived yet (the reader's request overtook the call): wait a while for it
                    self._early.setdefault(task, []).append((time.monotonic() + _EARLY_GRACE, header, reply))
                    return
        self._subscribe(state, header, reply)

    def _subscribe(self, state: StreamState, header: dict, reply: Callable[[Entry], None]) -> None:
        start = header.get("from") or 0
        with state.cond:
            if start < state.base:
                problem = _expired(state.task, f"items {state.base}.. only: the first {state.base} were dropped (byte budget)")
            elif header["ref"] in state.subs:
                problem = wire.err_entry(wire.K_BADREQUEST, f"reader {header['ref']!r} already reads this stream")
            elif len(state.subs) >= SUBS_MAX:
                problem = wire.err_entry(wire.K_UNAVAILABLE, f"stream {state.task} has {SUBS_MAX} readers already")
            else:
                problem = None
                state.subs[header["ref"]] = _Sub(
                    reply, header["ref"], header.get("sess"), min(start, len(state.items)), header.get("chain"),
                    bool(header.get("inline")))
                state.wake()  # a paused generator lets this reader's chain in too
        if problem is not None:
            reply(problem)
            return
        self._push(state, force=True)

    def ack(self, header: dict) -> None:
        """Op ``stream_ack``: a reader consumed items up to ``at`` (or leaves, ``close``)."""
        state = self.states.get(header["task"])
        if state is None:
            return
        ref = header["ref"]
        with state.cond:
            sub = state.subs.get(ref)
            if sub is None:
                return
            at = min(header.get("at") or 0, sub.sent)
            if at > sub.acked:
                sub.acked = at
                state.mark = max(state.mark, at)
            if header.get("close"):
                del state.subs[ref]
            state.wake()
        if header.get("close"):
            sub.reply(({"op": wire.OK, "end": sub.sent}, wire.NIL, []))
        else:
            self._push(state, force=True)

    def expire_early(self) -> None:
        """Answer subscriptions whose call never arrived within the grace period (a timer, I/O thread)."""
        if not self._early:
            return
        now = time.monotonic()
        late = []
        with self._lock:
            for task, waiting in list(self._early.items()):
                keep = [w for w in waiting if w[0] > now]
                late += [(task, w[2]) for w in waiting if w[0] <= now]
                if keep:
                    self._early[task] = keep
                else:
                    del self._early[task]
        for task, reply in late:
            reply(_expired(task))

    # -- pushing (I/O thread) ----------------------------------------------------------------------
    def _push_soon(self, state: StreamState) -> None:
        with state.cond:
            if state.flushing:
                return
            state.flushing = True
        self.call_soon(self._push, state)

    def _push(self, state: StreamState, force: bool = False) -> None:
        """Send each reader the items it may have now, and the end to readers that have them all.

        The scheduled push (``force`` off; a forced one leaves that one scheduled) stays the
        scheduled one until it sent: items put meanwhile schedule no other (no wake-up of this
        thread per batch); it goes again at once if items (or the end) came while it sent.
        """
        sends: list[tuple[_Sub, Entry]] = []
        with state.cond:
            n, ended = len(state.items), state.end is not None
            for sub in list(state.subs.values()):
                if sub.sent < state.base:
                    del state.subs[sub.ref]
                    sends.append((sub, _expired(state.task, "items were dropped (byte budget) before this reader read them")))
                    continue
                cum, at = state.cum, sub.sent
                hi = min(n, sub.acked + self.window)
                if at < hi:  # within the reader's byte credit too (at least one item: a large one goes alone)
                    hi = max(at + 1, bisect_right(cum, cum[sub.acked] + self.window_bytes, at + 1, hi + 1) - 1)
                while at < hi:  # batches of BATCH_BYTES at most (or one larger item)
                    end = min(at + MAX_ITEMS, max(at + 1, bisect_right(cum, cum[at] + BATCH_BYTES, at + 1, hi + 1) - 1))
                    if sub.inline and state.plain:
                        part = {"op": wire.OK, "more": 1, "at": at, "inline": 1}
                        body, buffers = stream_items.pack_inline([b for b, _ in state.items[at:end]]), []  # type: ignore[misc]
                    else:
                        part = {"op": wire.OK, "more": 1, "at": at}
                        body, buffers = stream_items.pack(state.items[at:end], state.framed)  # type: ignore[arg-type]
                    sends.append((sub, (part, body, buffers)))
                    at = sub.sent = end
                if state.end is not None and sub.sent >= n:
                    del state.subs[sub.ref]
                    sends.append((sub, _end_entry(state.end, n)))
            state.relow()
        for sub, entry in sends:
            sub.reply(entry)
        if not force:
            with state.cond:  # sent: a generator waiting for the item it made after a pause goes on
                state.pushed += 1
                state.cond.notify_all()
                again = bool(state.subs) and (len(state.items) > n or (not ended and state.end is not None))
                state.flushing = again
            if again:
                self.call_soon(self._push, state)


def _end_entry(end: Entry, count: int) -> Entry:
    if end[0].get("op") == wire.OK:
        return {"op": wire.OK, "end": count}, wire.NIL, []
    return end


def _expired(task: str, why: str = "it expired, was released, or never existed") -> Entry:
    return wire.err_entry(wire.K_EXPIRED, f"no stream {task} on this server: {why}")
