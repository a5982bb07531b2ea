"""What keeps a million unread futures small (``mesh.client._future``): shared defaults, and
a call's plain reply kept without its transport future; and the ``no_waiting`` read mode of an await.

- ``_mesh_lock`` is the one :data:`SHORT` lock: it guards a few instructions only and is never
  held while waiting or sending (the I/O thread never takes it either).
- ``_mesh_children`` is the shared empty tuple :data:`NO_CHILDREN` until the future is lent
  (``mesh.client._holders`` makes it a list then).
- ``_mesh_pid`` is one int object per process (:data:`pid`).
- When a call's reply is a plain small ``ok`` (no buffers, no ``big``), :func:`compact` (a
  done-callback, on the I/O thread) replaces the transport future in ``_mesh_call`` with a
  :class:`Replied`, which keeps only the body: the future, the reply's header dict and its frame
  list go. ``Replied`` answers ``done``, ``result``, ``exception`` and ``add_done_callback`` as the
  done transport future did, so every reader of ``_mesh_call`` works unchanged.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

from mesh._core import wire

PENDING = object()  # a future's value not read yet (mesh.client._future; made here so the asyncio modules share it)

__all__ = ["NO_CHILDREN", "OK_HEADER", "SHORT", "NeedWait", "Replied", "compact", "kept_body", "no_waiting", "pid"]

SHORT = threading.Lock()
NO_CHILDREN: tuple = ()
pid = [os.getpid()]
os.register_at_fork(after_in_child=lambda: pid.__setitem__(0, os.getpid()))
_OK_HEADER = OK_HEADER = {"op": wire.OK}  # the header of a kept reply (read only: its readers only .get() it)

_no_wait = threading.local()  # set while an await reads a future (see mesh.client._aio)


class NeedWait(BaseException):
    """Raised by a read made under :func:`no_waiting` instead of blocking: wait for ``fut``, then read again.

    A ``BaseException``: no ``except Exception`` on the way treats it as the read's failure.
    """

    def __init__(self, fut: Any) -> None:
        super().__init__()
        self.fut = fut


class no_waiting:
    """Within it, reading a future raises :class:`NeedWait` where it would block (this thread only)."""

    def __enter__(self) -> None:
        _no_wait.on = True

    def __exit__(self, *exc: Any) -> None:
        _no_wait.on = False


class Replied:
    """A call's plain ``ok`` reply, standing in for its done transport future."""

    __slots__ = ("body",)

    def __init__(self, body: bytes) -> None:
        self.body = body

    def done(self) -> bool:
        return True

    def result(self, timeout: float | None = None) -> tuple:
        return _OK_HEADER, self.body, []

    def exception(self, timeout: float | None = None) -> None:
        return None

    def add_done_callback(self, fn: Any) -> None:
        fn(self)


def kept_body(call: Any) -> bool:
    """Whether a call's done future keeps only the body of its plain ``ok`` reply: a :class:`Replied`,
    or a lane future (``mesh.client._async_lane.LaneReply``) whose kept reply is ``(OK_HEADER, body, ())``."""
    if type(call) is Replied:
        return True
    try:
        return call.done() and call.exception() is None and call.result()[0] is _OK_HEADER
    except Exception:  # noqa: BLE001 - not a future of ours
        return False


def compact(ref: weakref.ref, fut: Any) -> None:
    """The call's reply came (I/O thread): a plain small ``ok`` is kept as a :class:`Replied`."""
    owner = ref()
    if owner is None:
        return
    try:
        header, body, buffers = fut.result()
    except BaseException:  # noqa: BLE001 - a failure stays on the transport future
        return
    if buffers or type(body) is not bytes or header.get("op") != wire.OK or header.get("big"):
        return
    d = owner.__dict__
    if d.get("_mesh_call") is fut:  # atomic under the GIL; no lock: the I/O thread never waits here
        d["_mesh_call"] = Replied(body)


def owner_future(cls: type, proxy: Any, address: str, task: str, call: Any) -> tuple[Any, dict]:
    """A future of ``cls`` that owns ``call`` (made by a lane without ``__init__``): the fields of
    ``_FutureMixin._mesh_init`` for an owner, stored in its order, so that the instance dicts share
    their keys (a split table: its values only). Returns the future and its ``__dict__``."""
    future = cls.__new__(cls)
    d = future.__dict__
    d["_mesh_pool"] = proxy._mesh_pool
    d["_mesh_inst"] = proxy._mesh_inst
    d["_mesh_address"] = address
    d["_mesh_task"] = task
    d["_mesh_call"] = call
    d["_mesh_fetch"] = None
    d["_mesh_value"] = PENDING
    d["_mesh_exc"] = None
    d["_mesh_lock"] = SHORT
    d["_mesh_ref"] = ""  # the owner
    d["_mesh_children"] = NO_CHILDREN
    d["_mesh_pinned"] = False
    d["_mesh_pid"] = pid[0]  # (a copy inherited by a forked child is not a holder)
    return future, d
