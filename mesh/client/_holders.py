"""The release protocol, caller side: who holds a task's result, and telling its producer when
they let go. (The producer side is ``mesh.server._holders``.)

Every handle on a task is a *holder*: the caller that made the call (the *owner*, ref ``""``)
and each copy unpickled from call arguments (a *borrower*, with its own ref id).

- A holder pickled into call arguments (decoded exactly once, by the server that runs the call:
  :func:`counted_pickles` is on while the client encodes them) names a new borrower with a fresh
  ref id and records it among its *children*. A send that fails takes those refs back
  (:func:`take_back`): the borrowers will never exist.
- A holder pickled anywhere else (into a result, to disk, by ``copy``) is *pinned* (:func:`pin`): a
  pickle can be read any number of times there, so when it is collected (or its session ends) its
  report names :data:`~mesh._core.wire.PINNED_REF` among its children, sent at once: once no counted
  holder is left, the producer keeps the result as a *loose* one (``max_len`` / ``max_expire_time``
  bound it) instead of dropping it.
- When a holder is garbage-collected it reports ``task`` (an owner that made no copies) or
  ``[task, ref, children]`` to the producer (:func:`report`). Reports are queued (a finalizer may
  run on any thread at any moment) and go out in batches as ``op: release``
  (:class:`ReleaseQueue`), at once for a large value.
- The producer drops the result once the owner and every borrower it has heard of are gone, in
  whatever order the reports come.
- When the session ends (``mesh.shutdown()``), every live holder that made copies reports them
  (:func:`release_lenders`) before the client's ``bye``, so the results the copies hold stay
  (as loose results) and the rest goes with the session.
- A copy inherited by a forked child is not a holder (``_mesh_pid``).
"""

from __future__ import annotations

import collections
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

from mesh._core import ids, wire
from transport._codec import set_attempt_hooks
from mesh.client._lean import pid as _pid

__all__ = [
    "ReleaseQueue", "activate", "counted_pickles", "counting", "deactivate", "lend", "pin", "release_lenders",
    "report", "take_back",
]

_local = threading.local()

# holders that passed copies of themselves on in call arguments (id -> holder)
_lenders: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


# -- counted pickling (while the client encodes call arguments) -----------------------------------
def counting() -> bool:
    """True while this thread encodes the arguments of a call (decoded exactly once)."""
    return getattr(_local, "counting", None) is not None


class counted_pickles:  # noqa: N801 - used as a context manager, as it was when it was a function
    """Futures pickled inside become counted holders.

    ``with counted_pickles() as made``: the list of ``(holder, ref)`` made, so that a send that
    fails can take them back. (A class: cheaper per call than a generator context manager.)
    """

    __slots__ = ("made",)

    def __enter__(self) -> list:
        made = self.made = []
        _local.counting = made
        return made

    def __exit__(self, *exc: Any) -> None:
        _local.counting = None


def lend(holder: Any) -> str:
    """``holder`` is pickled into call arguments: a new borrower's ref, recorded as its child."""
    ref = ids.new_chain()
    d = holder.__dict__
    if type(d["_mesh_children"]) is not list:  # a shared empty tuple until the first copy
        d["_mesh_children"] = []
    d["_mesh_children"].append(ref)
    _lenders[id(holder)] = holder
    made = getattr(_local, "counting", None)
    if made is not None:
        made.append((holder, ref))
    return ref


def pin(holder: Any) -> None:
    """``holder`` is pickled outside call arguments: copies may be read any number of times, so its
    result becomes loose (not dropped) once no counted holder is left, also when the session ends."""
    holder.__dict__["_mesh_pinned"] = True
    _lenders[id(holder)] = holder


def take_back(made: list) -> None:
    """Arguments that will not be sent: the borrowers pickled into them will never exist."""
    for holder, ref in made:
        children = holder.__dict__.get("_mesh_children")
        if type(children) is list and ref in children:
            children.remove(ref)


def _attempt_mark() -> int | None:
    made = getattr(_local, "counting", None)
    return None if made is None else len(made)


def _attempt_undo(mark: int | None) -> None:
    """The codec abandoned a try of the C pickler (a part must go by value): the borrowers its
    ``__reduce__`` calls recorded will not be sent (cloudpickle records them again)."""
    made = getattr(_local, "counting", None)
    if made is not None and mark is not None and len(made) > mark:
        take_back(made[mark:])
        del made[mark:]


set_attempt_hooks((_attempt_mark, _attempt_undo))


# -- reports ------------------------------------------------------------------------------------
class ReleaseQueue:
    """Released handles, ``(address, item)``, sent in batches by ``send(address, items)``.

    A deque, not a lock: a finalizer may run in any thread at any moment (the garbage
    collector), even in a thread that is flushing.
    """

    def __init__(self, send: Callable[[str, list], None], alive: Callable[[], bool]) -> None:
        self._send = send
        self._alive = alive
        self._queue: collections.deque[tuple[str, Any]] = collections.deque()
        self.pid = os.getpid()
        self.closed = False

    def open(self) -> bool:
        return not self.closed and self.pid == _pid[0] and self._alive()  # (_pid: os.getpid() without a syscall)

    def add(self, address: str, item: Any, *, now: bool = False) -> None:
        """``now``: send at once (a large value: free its memory soon)."""
        self._queue.append((address, item))
        if now or len(self._queue) >= 256:
            self.flush()

    def flush(self) -> None:
        batches: dict[str, list] = {}
        queue = self._queue
        while True:
            try:
                address, item = queue.popleft()
            except IndexError:
                break
            batches.setdefault(address, []).append(item)
        for address, items in batches.items():
            self._send(address, items)


_active: ReleaseQueue | None = None


def activate(queue: ReleaseQueue) -> None:
    """The queue that collected holders report to (the live client's)."""
    global _active
    _active = queue


def deactivate(queue: ReleaseQueue) -> None:
    """``queue``'s client closes: holders collected from now on report to nobody (unless another is active)."""
    global _active
    if _active is queue:
        _active = None


def _is_holder(d: dict) -> bool:
    return d.get("_mesh_ref") is not None and "_mesh_pinned" in d and d.get("_mesh_pid") == _pid[0]


def _children(d: dict) -> list:
    """The refs a report names: the copies made in call arguments, and the pinned mark."""
    return [*d["_mesh_children"], wire.PINNED_REF] if d["_mesh_pinned"] else d["_mesh_children"]


def report(d: dict) -> None:
    """A holder (its ``__dict__``) is gone: queue its report. Never raises (finalizers call it)."""
    try:
        queue = _active
        if not _is_holder(d) or queue is None or not queue.open():
            return
        children = _children(d)
        big = d.get("_mesh_big", False) or _big_reply(d.get("_mesh_call"))
        if d["_mesh_ref"] == "" and not children:  # the owner, never shared
            queue.add(d["_mesh_address"], d["_mesh_task"], now=big)
        else:  # a pinned one at once: what it held may soon be pushed out by newer loose results
            queue.add(d["_mesh_address"], [d["_mesh_task"], d["_mesh_ref"], children], now=big or d["_mesh_pinned"])
    except Exception:  # never raise from a finalizer (e.g. at interpreter exit)
        pass


def _big_reply(call: Any) -> bool:
    """The call's reply said its result is large (``big``: kept by the producer, not pushed)."""
    if call is None or not call.done():
        return False
    try:
        reply = call.result(0)
    except BaseException:  # noqa: BLE001 - a failed call holds no value
        return False
    return type(reply) is tuple and bool(reply[0].get("big"))


def release_lenders(queue: ReleaseQueue) -> None:
    """The session ends: every live holder that passed copies on (or was pinned) lets go now, naming the copies.

    Sent before the client's ``bye``, so the producer keeps those results for the copies (as loose
    results) and drops the rest with the session. The holders send nothing more when collected.
    """
    for holder in list(_lenders.values()):
        d = holder.__dict__
        if not _is_holder(d):
            continue
        queue.add(d["_mesh_address"], [d["_mesh_task"], d["_mesh_ref"], list(_children(d))])
        d["_mesh_ref"] = None  # reported: the finalizer stays silent
    _lenders.clear()
