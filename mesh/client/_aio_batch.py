"""Done-callbacks of mesh futures on an asyncio loop, resolved in batches (``asyncio.gather`` of
10,000 futures: one wake-up of the loop per burst of replies, not one per reply).

``AioFuture.add_done_callback`` (``mesh.client._aio``) hands its callback to the loop's
:class:`Resolver`. The resolver checks, in one loop callback per turn, every future given to it
in that turn (the read an ``await`` makes: the value or its error, big values and forwarded
futures included) and calls the callbacks of those that are done right there, one after the
other, in that same callback (asyncio would schedule one ``Handle`` each for the next turn; a
callback is never called from inside ``add_done_callback``, as asyncio never does). A future
not done yet gets one done-callback on the transport future it waits for; when that completes:

* on the I/O thread: the future is queued and the loop is woken **once that I/O turn has
  handled all the replies it read** (``Node.call_soon`` from the I/O thread runs at the end of
  its turn): one ``call_soon_threadsafe`` for the whole burst, however fast the loop answers. A
  wake-up sent at the first reply of a burst made the loop, on an idle core, take the GIL back
  from the I/O thread once per reply (the two threads ping-pong; on a loaded machine the loop's
  thread is not scheduled at once, so bursts formed by themselves: why a gather was slower than a
  thread's ``result()`` loop only on a quiet machine);
* on another thread: queued, one ``call_soon_threadsafe`` per burst;
* on the loop's own thread (a lane's reader): checked in the loop's next callback of this kind.

A loop that is closed is not kept alive: the resolver holds it weakly, and the resolvers are
weak values of their loops.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from functools import partial
from typing import Any

import msgpack

from mesh._core import wire
from mesh.client._client import get_client
from mesh.client._lean import PENDING, SHORT, Replied
from transport import ReplyFuture
from transport._lane_future import LaneFuture

__all__ = ["resolve", "resolver"]

_get_ident = threading.get_ident
_unpackb = msgpack.unpackb
_OK = wire.OK


class Resolver:
    """One loop's pending done-callbacks of mesh futures. Items: ``(future, fn, context, entry)``,
    ``entry`` the ``[fn, live]`` that ``remove_done_callback`` clears."""

    __slots__ = ("loop", "ident", "node", "due", "incoming", "scheduled", "woken", "__weakref__")

    def __init__(self, loop: Any, node: Any) -> None:
        self.loop = weakref.ref(loop)
        self.ident = _get_ident()  # made on the loop's thread (by add_done_callback)
        self.node = node  # whose I/O thread completes most transport futures
        self.due: list = []  # the loop's thread only: to check in the next run()
        self.incoming: deque = deque()  # completed elsewhere (appended by any thread)
        self.scheduled = False  # a call_soon(run) is pending
        self.woken = False  # a wake-up (call_soon_threadsafe(take)) is pending

    # -- the loop's thread ------------------------------------------------------------------
    def add(self, fut: Any, fn: Any, context: Any, entry: list) -> None:
        """Call ``fn(fut)`` (in ``context``) on the loop once ``fut`` can be read without blocking."""
        self.due.append((fut, fn, context, entry))
        if not self.scheduled:
            loop = self.loop()
            if loop is None:
                return
            loop.call_soon(self.run)
            self.scheduled = True

    def run(self) -> None:
        self.scheduled = False
        due, self.due = self.due, []
        self._check_all(due)

    def take(self) -> None:
        self.woken = False  # (before draining: what comes after this line wakes the loop again)
        incoming = self.incoming
        items = []
        while incoming:
            items.append(incoming.popleft())
        self._check_all(items)

    def _check_all(self, items: list) -> None:
        for i, item in enumerate(items):
            try:
                self._check(item)
            except (SystemExit, KeyboardInterrupt):
                self.due[:0] = items[i + 1:]  # the others still get their turn
                loop = self.loop()
                if self.due and loop is not None and not self.scheduled:
                    loop.call_soon(self.run)
                    self.scheduled = True
                raise

    def _check(self, item: tuple) -> None:
        fut, fn, context, entry = item
        if not entry[1]:  # removed meanwhile
            return
        if not _plain_read(fut):
            try:
                done, got = fut._mesh_try_read()
            except Exception as exc:  # noqa: BLE001 - exception() reports it
                fut.__dict__["_mesh_aio_exc"] = exc
                done = True
        else:
            done = True
        if not done:
            got.add_done_callback(partial(self.arrived, item))
            return
        entry[1] = False
        entry[0] = None  # (called: the future no longer holds the callback, e.g. a gather's closure over
        # every child: a reference cycle per future, which only the garbage collector would free)
        try:
            if context is None:
                fn(fut)
            else:
                context.run(fn, fut)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # noqa: BLE001 - as asyncio's Handle reports a failed callback
            loop = self.loop()
            if loop is not None:
                loop.call_exception_handler({"message": f"Exception in callback {fn!r}", "exception": exc,
                                             "future": fut})

    # -- any thread ----------------------------------------------------------------------------
    def arrived(self, item: tuple, _source: Any) -> None:
        """The transport future ``item``'s future waited for is done."""
        if _get_ident() == self.ident:  # a lane's reader (or the thread driving it)
            try:
                self.add(*item)
            except RuntimeError:  # its loop is closed: nobody waits there any more
                pass
            return
        self.incoming.append(item)
        if self.woken:
            return
        self.woken = True
        node = self.node
        if node is not None and not node.closed and node.on_io_thread():
            node.call_soon(self.wake)  # at the end of this I/O turn: after every reply it read
        else:
            self.wake()

    def wake(self) -> None:
        loop = self.loop()
        try:
            if loop is None:
                raise RuntimeError("the loop is gone")
            loop.call_soon_threadsafe(self.take)
        except RuntimeError:  # that loop is closed (or gone): nobody awaits there any more
            self.incoming.clear()


def _plain_read(fut: Any) -> bool:
    """Read ``fut``'s plain reply (``ok``, no buffers, not big: a :class:`Replied`, or a done transport
    future holding one) when its value is a plain one (no ext value: nothing the codec must decode)
    and nothing else is in the way (a fetch, a forward, a deadline, a pool read): what ``result()``
    would return, without its path (as an await's fast lane reads it). False: ``_mesh_try_read`` decides."""
    d = fut.__dict__
    call = d["_mesh_call"]
    if (d["_mesh_value"] is not PENDING or d["_mesh_fetch"] is not None or d["_mesh_exc"] is not None
            or d.get("_mesh_deadline") is not None or d.get("_mesh_pooled") is not None or "_mesh_forward" in d):
        return False
    kind = type(call)
    if kind is Replied:
        body = call.body
    elif (kind is LaneFuture or kind is ReplyFuture) and call.done():
        try:
            rh, body, bufs = call.result()
        except BaseException:  # noqa: BLE001 - a failure: result() raises it
            return False
        if bufs or type(body) is not bytes or rh.get("op") != _OK or rh.get("big"):
            return False
    else:
        return False
    try:
        value = _unpackb(body, raw=False, strict_map_key=False, ext_hook=_not_plain)
    except Exception:  # noqa: BLE001 - an ext value (a tuple, a pickle...) or malformed: the codec decides
        return False
    with SHORT:
        if d["_mesh_value"] is PENDING:
            d["_mesh_value"] = value
    if kind is LaneFuture and d["_mesh_call"] is call:  # keep the body only (what _lean.compact does)
        d["_mesh_call"] = Replied(body)
    return True


def _not_plain(code: int, data: bytes) -> Any:
    raise ValueError("an ext value: decoded by the codec")


_resolvers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loop -> Resolver
_lock = threading.Lock()
# the last (loop, resolver) asked (10,000 adds of a gather ask for the same); one tuple, replaced whole:
# loops on several threads never mix two
_last: list = [(weakref.ref(set()), None)]


def resolve(loop: Any, fut: Any, fn: Any, context: Any, entry: list) -> None:
    """``resolver(loop).add(fut, fn, context, entry)`` (a gather asks once per future)."""
    last_loop, res = _last[0]
    if last_loop() is not loop:
        res = resolver(loop)
    res.due.append((fut, fn, context, entry))
    if not res.scheduled:
        loop.call_soon(res.run)
        res.scheduled = True


def resolver(loop: Any) -> Resolver:
    """The running ``loop``'s resolver (made on first use, on the loop's thread)."""
    last_loop, last = _last[0]
    if last_loop() is loop:
        return last
    res = _resolvers.get(loop)
    if res is None:
        with _lock:
            res = _resolvers.get(loop)
            if res is None:
                res = _resolvers[loop] = Resolver(loop, get_client().node)
    _last[0] = (weakref.ref(loop), res)
    return res
