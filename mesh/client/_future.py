"""Futures: ``AsyncResult`` and ``Placeholder``, values that a remote task will produce.

A future is ``(producer address, task id)`` plus, on the caller's side, the
pending call. Pickled (passed as an argument, returned, nested in a ``Msg``)
it travels as that reference only: whoever reads it fetches the value straight
from the producer, and passing it never waits.

Releasing results: every handle is a *holder* of the task; the protocol (caller side) is in
``mesh.client._holders``, its producer side in ``mesh.server._holders``.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import time
import weakref
from typing import Any

from transport import ReplyFuture
from mesh._core import redis_results, runtime, settings, wire
from mesh._errors import CallTimeout, MeshError, OutcomeUnknown, ServerUnavailable
from mesh._msg import Msg
from mesh.client._aio import PENDING as _PENDING, AioFuture, pool_read, pooled_value
from mesh.client._aio_fast import awaited
import mesh.client._async_lane as _async_lane
from mesh.client._async_lane import read_plain as _read_plain
from mesh.client._cancel import cancel_future, past_deadline
from mesh.client._holders import counting, lend, pin, report
from mesh.client._lean import NO_CHILDREN as _NO_CHILDREN, SHORT as _SHORT, NeedWait, compact as _compact, no_waiting
from mesh.client._lean import _no_wait, pid as _pid
from mesh.client._operators import install as install_operators
from mesh.client._client import get_client
from mesh.client._replies import decode_reply, wait

__all__ = ["AsyncResult", "NeedWait", "Placeholder", "is_future", "no_waiting", "resolve"]

class _FutureMixin(AioFuture):
    """The machinery shared by AsyncResult and Placeholder."""

    _mesh_kind = "a future"

    def __init__(
        self, address: str, task: str, call: concurrent.futures.Future | None = None, *,
        pool: str | None = None, inst: str | None = None,
    ) -> None:
        # (for a Placeholder, Msg.__init__ is deliberately not called: the fields come from the producer)
        self._mesh_init(address, task, call, pool, inst=inst)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(f"{name!r}: private names are not resolved through {self._mesh_kind}")
        return getattr(self.result(), name)

    def _mesh_init(
        self, address: str, task: str, call: concurrent.futures.Future | None, pool: str | None = None,
        ref: str | None = None, inst: str | None = None,
    ) -> None:
        d = self.__dict__
        d["_mesh_pool"] = pool  # the producer's Redis pool, readable while the producer is down
        d["_mesh_inst"] = inst  # the producer server's run: a restarted server answers "expired" at once
        d["_mesh_address"] = address
        d["_mesh_task"] = task
        d["_mesh_call"] = call
        d["_mesh_fetch"] = None
        d["_mesh_value"] = _PENDING
        d["_mesh_exc"] = None
        d["_mesh_lock"] = _SHORT  # shared: short sections only
        d["_mesh_ref"] = "" if call is not None else ref  # "" the owner; None an uncounted copy
        d["_mesh_children"] = _NO_CHILDREN  # refs of the borrowers this holder made (a list once lent)
        d["_mesh_pinned"] = False  # pickled where it may be read many times: loosened, never dropped
        d["_mesh_pid"] = _pid[0]  # a copy inherited by a forked child is not a holder
        if call is not None and type(call) is ReplyFuture:  # keep only the body of a plain reply
            call.add_done_callback(functools.partial(_compact, weakref.ref(self)))

    # -- public API ---------------------------------------------------------
    def result(self, timeout: float | None = None) -> Any:
        """Wait for the value and return it.

        Args:
            timeout: seconds to wait; ``None`` waits as long as the producer is alive.

        Raises:
            CallTimeout: no value within ``timeout``.
            RemoteError: the producer raised.
            ResultExpired: the producer no longer holds the value.
            ServerUnavailable: the producer died or cannot be reached.
        """
        d = self.__dict__
        if d["_mesh_value"] is not _PENDING:
            return d["_mesh_value"]
        if d["_mesh_exc"] is not None:
            raise d["_mesh_exc"]
        value = _read_plain(d)  # a lane call's plain value, here already (mesh.client._async_lane)
        if value is not _PENDING:
            with d["_mesh_lock"]:
                if d["_mesh_value"] is _PENDING:
                    d["_mesh_value"] = value
            return d["_mesh_value"]
        deadline = None if timeout is None else time.monotonic() + timeout
        at = d.get("_mesh_deadline")  # made under mesh.deadline(): a read ends by then
        if at is not None and (deadline is None or at < deadline):
            deadline = at
        try:
            value = d.get("_mesh_forward", _PENDING)
            if value is _PENDING:
                reply = self._mesh_wait(self._mesh_source(), deadline)
                # a value that came with the reply is ours whenever we read it: while this future lives,
                # the producer holds the result too (max_len / max_expire_time bound only unheld ones)
                if reply[0].get("op") == wire.OK and reply[0].get("big"):
                    reply = self._mesh_wait(self._mesh_start_fetch(), deadline)
                if reply[2]:  # buffers: a large value, worth releasing at once when this handle goes
                    d["_mesh_big"] = True
                value = decode_reply(reply, d["_mesh_address"])
            if isinstance(value, _FutureMixin):  # a forwarded future: follow it (it follows its own)
                d["_mesh_forward"] = value  # decoded once: an await that resumes reads it again
                value = value.result(None if deadline is None else max(0.0, deadline - time.monotonic()))
        except CallTimeout:
            if at is not None and time.monotonic() >= at:
                raise past_deadline(self) from None
            raise
        except ServerUnavailable as exc:
            value = self._mesh_after_loss(exc, deadline)
        except MeshError as exc:
            d["_mesh_exc"] = exc
            raise
        with d["_mesh_lock"]:
            if d["_mesh_value"] is _PENDING:
                d["_mesh_value"] = value
        return d["_mesh_value"]

    # -- connection failures (owned by the transport side; kept apart from result expiry) ----
    def _mesh_after_loss(self, exc: ServerUnavailable, deadline: float | None) -> Any:
        """The producer could not be reached, or the connection went while the call was out.

        Never cached: the producer keeps results, so a later read asks it again with
        ``result`` (a future whose producer is alive again is fetchable). When the call
        was sent (:class:`OutcomeUnknown`), one fetch is tried at once: after a short
        partition or a stall the producer usually answers it.
        """
        d = self.__dict__
        with d["_mesh_lock"]:
            d["_mesh_call"] = None  # a failed call or fetch: the next read starts a fresh fetch
            d["_mesh_fetch"] = None
        address = d["_mesh_address"]
        if isinstance(exc, OutcomeUnknown) and not d.get("_mesh_refetched") and not _seen_down(address):
            d["_mesh_refetched"] = True
            try:
                return self.result(None if deadline is None else max(0.0, deadline - time.monotonic()))
            except ServerUnavailable as again:
                if not isinstance(again, OutcomeUnknown):  # not back: the other futures need not ask
                    _down[address] = time.monotonic()
                raise
        return self._mesh_from_pool(exc)

    def _mesh_from_pool(self, exc: ServerUnavailable) -> Any:
        """The producer is unreachable: read the value from its Redis pool, if it has one."""
        d = self.__dict__
        if d.get("_mesh_pool") and getattr(_no_wait, "on", False):  # an await: Redis is read on a thread
            d["_mesh_pooled"] = pool_read(d["_mesh_pool"], d["_mesh_task"], exc, settings.current().secret)
            raise NeedWait(d["_mesh_pooled"])
        if d.get("_mesh_pool"):
            try:
                entry = redis_results.fetch(d["_mesh_pool"], d["_mesh_task"], secret=settings.current().secret)
            except Exception:  # Redis down too: report the producer's failure
                entry = None
            if entry is not None:
                return decode_reply(entry, d["_mesh_address"])
        raise exc  # not cached: see _mesh_after_loss

    def cancel(self, msg: Any = None) -> bool:
        """Stop the task, and every call it made (transitively, on every server).

        A queued call never runs; a running coroutine gets ``CancelledError`` at its next
        await; a running sync method sees ``mesh.cancelled()``. Returns True if the task was
        stopped before it finished; reading the future then raises :class:`mesh.Cancelled`.
        """
        return cancel_future(self)

    def done(self) -> bool:
        """True once the value (or the producer's error) is available."""
        d = self.__dict__
        if d["_mesh_value"] is not _PENDING or d["_mesh_exc"] is not None:
            return True
        return self._mesh_source().done()

    def _mesh_on_done(self, fn: Any) -> None:
        """Call ``fn()`` once :meth:`done` is true (now, or from the I/O thread): ``mesh.wait``'s hook."""
        d = self.__dict__
        if d["_mesh_value"] is not _PENDING or d["_mesh_exc"] is not None:
            fn()
            return
        try:
            source = self._mesh_source()
        except Exception:  # noqa: BLE001 - cannot even ask: reading it raises, so it is done
            fn()
            return
        source.add_done_callback(lambda _f: fn())

    # -- internals ----------------------------------------------------------
    def _mesh_source(self) -> concurrent.futures.Future:
        call = self.__dict__["_mesh_call"]
        return call if call is not None else self._mesh_start_fetch()

    def _mesh_start_fetch(self) -> concurrent.futures.Future:
        d = self.__dict__
        fut = d["_mesh_fetch"]
        if fut is not None:
            return fut
        # sent without a lock held (the send may wait for the window); two racing readers may
        # both ask: the first fetch kept wins, the other is a harmless read
        rt = runtime.current(create=False)
        local = rt.producers.get(d["_mesh_address"]) if rt is not None else None
        if local is not None:
            fut = local(d["_mesh_task"], d.get("_mesh_inst"))
        else:
            header = {"op": wire.RESULT, "task": d["_mesh_task"]}
            if d.get("_mesh_inst"):
                header["inst"] = d["_mesh_inst"]
            fut = get_client().request(d["_mesh_address"], header, None)
        with _SHORT:
            if d["_mesh_fetch"] is None:
                d["_mesh_fetch"] = fut
            return d["_mesh_fetch"]

    def _mesh_wait(self, fut: concurrent.futures.Future, deadline: float | None) -> tuple:
        if not fut.done() and getattr(_no_wait, "on", False):
            raise NeedWait(fut)  # an await reads this future: it waits for `fut` without blocking the loop
        return wait(fut, deadline, self.__dict__["_mesh_address"])

    def _mesh_try_read(self) -> tuple[bool, Any]:
        """``(True, value)`` (or raise as :meth:`result`), or ``(False, transport future to wait for)``."""
        d = self.__dict__
        if d.get("_mesh_pooled") is not None:  # a read of the producer's Redis pool, started by an await
            return pooled_value(self, decode_reply)
        pending = d["_mesh_call"] if d["_mesh_fetch"] is None else d["_mesh_fetch"]
        if pending is not None and d["_mesh_value"] is _PENDING and not pending.done():
            return False, pending  # the common case, without going through result() and NeedWait
        try:
            with no_waiting():
                return True, self.result()
        except NeedWait as need:
            return False, need.fut

    def __await__(self) -> Any:
        """``await fut``: the value, or what :meth:`result` raises; the running loop is never blocked."""
        return awaited(self)

    def __del__(self) -> None:
        try:  # this holder is gone: tell the producer (see mesh.client._holders)
            report(self.__dict__)
        except Exception:  # never raise from a finalizer (at interpreter exit, globals may be gone)
            pass

    def __reduce__(self) -> tuple:
        d = self.__dict__
        if d.get("_mesh_edited"):  # changed here: the producer's copy is stale, so it goes by value
            return (_same, (d["_mesh_value"],))
        ref = None
        if d["_mesh_ref"] is not None and not d["_mesh_pinned"]:
            if counting() and d.get("_mesh_pid") == os.getpid():
                ref = lend(self)
            else:
                pin(self)
        return (
            _rebuild,
            (type(self) is Placeholder, d["_mesh_address"], d["_mesh_task"], d.get("_mesh_pool"), ref, d.get("_mesh_inst")),
        )

    def _mesh_state(self) -> str:
        d = self.__dict__
        if d["_mesh_value"] is not _PENDING:
            return "done"
        if d["_mesh_exc"] is not None:
            return "failed"
        return "pending"


class AsyncResult(_FutureMixin):
    """The result of an ``@async_func`` call on a remote object.

    ``result(timeout=None)`` waits for it. When the value is a composite
    (dict, list, object), indexing, iteration, ``len``, ``in`` and public
    attribute access wait for it and act on the value.
    """

    _mesh_kind = "an AsyncResult"

    def __getitem__(self, key: Any) -> Any:
        return self.result()[key]

    def __iter__(self) -> Any:
        return iter(self.result())

    def __len__(self) -> int:
        return len(self.result())

    def __contains__(self, item: Any) -> bool:
        return item in self.result()

    def __bool__(self) -> bool:
        return bool(self.result())

    def __str__(self) -> str:
        return str(self.result())

    def __format__(self, spec: str) -> str:
        return format(self.result(), spec)

    # Scalars too: comparisons and arithmetic wait for the value (repr never waits; the
    # hash stays the object's own, so futures can still be kept in sets and dicts).
    __hash__ = object.__hash__

    def __repr__(self) -> str:
        d = self.__dict__
        return f"<AsyncResult {self._mesh_state()} task={d['_mesh_task']} producer={d['_mesh_address']}>"


class Placeholder(_FutureMixin, Msg):
    """The message a remote agent will produce.

    It is a :class:`Msg`: reading any field (``content``, ``name``, ``id``...)
    waits until the message exists. ``result(timeout=None)`` returns the ``Msg``.
    """

    _mesh_kind = "a Placeholder"

    # A future is hashable by identity, as an AsyncResult is (a Msg is not: mutable), so that
    # asyncio.gather / wait, sets and dicts take it; equality still compares the messages.
    __hash__ = object.__hash__

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
            return
        # Setting a field sets it on the message itself (waiting for it first), so reading it,
        # to_dict() and passing the placeholder on all see the change.
        msg = self.result()
        setattr(msg, name, value)
        self.__dict__["_mesh_edited"] = True

    def to_dict(self) -> dict[str, Any]:
        value = self.result()
        return value.to_dict() if isinstance(value, Msg) else {"content": value}

    def __repr__(self) -> str:
        d = self.__dict__
        if d["_mesh_value"] is not _PENDING:
            return f"Placeholder({d['_mesh_value']!r})"
        return f"<Placeholder {self._mesh_state()} task={d['_mesh_task']} producer={d['_mesh_address']}>"


# address -> when a fetch after a lost connection found it unreachable: for a short while the
# other futures of that producer do not ask again at once (a dead server fails them quickly)
_down: dict[str, float] = {}
_DOWN_MEMO = 2.0


def _seen_down(address: str) -> bool:
    when = _down.get(address)
    return when is not None and time.monotonic() - when < _DOWN_MEMO


def _rebuild(
    placeholder: bool, address: str, task: str, pool: str | None = None, ref: str | None = None, inst: str | None = None
) -> _FutureMixin:
    cls = Placeholder if placeholder else AsyncResult
    fut = cls.__new__(cls)
    fut._mesh_init(address, task, None, pool, ref, inst)
    if ref is not None:
        # A borrower is born here (a server decoding call arguments): its report, when it is
        # collected, goes through this process's client, which a server process may not have made yet.
        get_client()
    return fut


install_operators(AsyncResult, _FutureMixin)
_async_lane.install(_PENDING)


def _same(value: Any) -> Any:
    return value


def is_future(value: Any) -> bool:
    return isinstance(value, _FutureMixin)


def resolve(value: Any, timeout: float | None = None) -> Any:
    """The value of a future (or of futures in a list), else ``value`` itself."""
    if isinstance(value, _FutureMixin):
        return value.result(timeout)
    if type(value) is list:
        return [resolve(v, timeout) for v in value]
    return value
