"""The release protocol, caller side: who holds a task's result, and telling its producer when
they let go. (The producer side is ``mesh.server._holders``.)

Every handle on a task is a *holder*: the caller that made the call (the *owner*, ref ``""``)
and each copy unpickled from call arguments (a *borrower*, with its own ref id).

- A holder pickled into call arguments (decoded exactly once, by the server that runs the call:
  :func:`counted_pickles` is on while the client encodes them) names a new borrower with a fresh
  ref id and records it among its *children*. A send that fails takes those refs back
  (:func:`take_back`): the borrowers will never exist.
- A holder pickled anywhere else (into a result, to disk, by ``copy``) is *pinned*: a pickle can
  be read any number of times there, so it never reports, and the task is kept until it expires.
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

from mesh._core import ids

__all__ = [
    "ReleaseQueue", "activate", "counted_pickles", "counting", "deactivate", "lend", "release_lenders", "report",
    "take_back",
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
    holder.__dict__["_mesh_children"].append(ref)
    _lenders[id(holder)] = holder
    made = getattr(_local, "counting", None)
    if made is not None:
        made.append((holder, ref))
    return ref


def take_back(made: list) -> None:
    """Arguments that will not be sent: the borrowers pickled into them will never exist."""
    for holder, ref in made:
        children = holder.__dict__.get("_mesh_children")
        if children is not None and ref in children:
            children.remove(ref)


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
        return not self.closed and self.pid == os.getpid() and self._alive()

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
    return d.get("_mesh_ref") is not None and not d.get("_mesh_pinned", True) and d.get("_mesh_pid") == os.getpid()


def report(d: dict) -> None:
    """A holder (its ``__dict__``) is gone: queue its report. Never raises (finalizers call it)."""
    try:
        queue = _active
        if not _is_holder(d) or queue is None or not queue.open():
            return
        children = d["_mesh_children"]
        big = d.get("_mesh_big", False)
        if d["_mesh_ref"] == "" and not children:  # the owner, never shared
            queue.add(d["_mesh_address"], d["_mesh_task"], now=big)
        else:
            queue.add(d["_mesh_address"], [d["_mesh_task"], d["_mesh_ref"], children], now=big)
    except Exception:  # never raise from a finalizer (e.g. at interpreter exit)
        pass


def release_lenders(queue: ReleaseQueue) -> None:
    """The session ends: every live holder that passed copies on lets go now, naming the copies.

    Sent before the client's ``bye``, so the producer keeps those results for the copies (as loose
    results) and drops the rest with the session. The holders send nothing more when collected.
    """
    for holder in list(_lenders.values()):
        d = holder.__dict__
        if not _is_holder(d):
            continue
        queue.add(d["_mesh_address"], [d["_mesh_task"], d["_mesh_ref"], list(d["_mesh_children"])])
        d["_mesh_ref"] = None  # reported: the finalizer stays silent
    _lenders.clear()
