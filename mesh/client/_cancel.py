"""Cancellation and deadlines, caller side: ``fut.cancel()``, calls made under a deadline or from
inside a running call (its children), and Ctrl-C.

* A call made under ``mesh.deadline()`` (or from a method whose call has one) carries the time
  left (header ``dl``); its future remembers the deadline, so a read ends then with
  :class:`~mesh.DeadlineExceeded` even if the producer is unreachable.
* A call made from inside a server's running call gets a task id (sync calls too) and is
  recorded as a child of that call's scope, so cancelling the call cancels it (the cascade).
* ``fut.cancel()`` asks the producer (op ``cancel``) and returns its answer: True if the task
  was queued or running and is now stopped. Reading the future then raises ``Cancelled``.
* Ctrl-C (``KeyboardInterrupt``) in a wait cancels every call of this process's session on the
  servers it called, waiting at most :data:`_INTERRUPT_WAIT` s for their answers.
* An ``await`` of a future whose asyncio task is cancelled (:func:`abandon`) cancels the remote
  task too, as cancelling a task cancels the asyncio future it awaits. Under ``asyncio.run()``,
  Ctrl-C reaches us that way (its runner cancels the main task instead of raising
  ``KeyboardInterrupt`` in our wait), so it then runs the same Ctrl-C cancel as a sync wait.
"""

from __future__ import annotations

import signal
import sys
import time
import weakref
from typing import Any

from mesh._core import ids, runtime, wire
from mesh._core.cancel import send_cancel
from mesh._errors import CallTimeout, Cancelled, DeadlineExceeded, MeshError
from mesh.client._on_loop import call_in_order
from mesh.client._client import get_client
from mesh.client._replies import decode_reply, set_interrupt_hook, wait

__all__ = ["abandon", "cancel_future", "cancel_started", "exiting", "past_deadline", "stamp", "sync_call", "track"]

_CANCEL_TIMEOUT = 5.0  # seconds fut.cancel() waits for the producer's answer
_INTERRUPT_WAIT = 0.5  # seconds Ctrl-C waits for the servers to confirm the cancels


def stamp(header: dict, at: float | None) -> None:
    """Put the time left before ``at`` into a call's header.

    Raises:
        DeadlineExceeded: the deadline passed already: the call is never sent.
    """
    if at is None:
        return
    left = at - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded(f"the deadline passed before {header.get('m')}(...) was sent: it never starts")
    header["dl"] = left


def track(future: Any, transport_fut: Any, scope: Any, at: float | None, address: str, task: str) -> None:
    """An async call made under a deadline and/or inside a running call: remember both."""
    if at is not None:
        future.__dict__["_mesh_deadline"] = at
        # a reply that comes after the deadline is the deadline's: every read raises DeadlineExceeded,
        # whenever it reads (a call queued behind a cancelled one may start a moment after the deadline)
        ref = weakref.ref(future)
        transport_fut.add_done_callback(lambda _f: _late(ref, at))
    if scope is not None:
        scope.add_child(address, task)
        transport_fut.add_done_callback(lambda _f: scope.drop_child(task))


def _late(ref: Any, at: float) -> None:
    future = ref()
    if future is not None and time.monotonic() > at:
        past_deadline(future)


def sync_call(proxy: Any, header: dict, value: Any, scope: Any, at: float | None) -> Any:
    """A sync call made under a deadline and/or inside a running call (then it is a child)."""
    address = proxy._mesh_address
    task = header.setdefault("task", ids.new_chain())  # so that it can be cancelled
    if scope is not None:
        scope.add_child(address, task)  # before it is sent: a cancel that overtakes it is remembered there
    try:
        if at is None:
            return proxy._mesh_request(header, value)
        client = get_client()
        timeout = client.settings.call_timeout
        left = max(0.001, at - time.monotonic())
        limit = left if timeout is None else min(timeout, left)
        try:
            return call_in_order(client, proxy._mesh_id, address, header, value, limit)
        except CallTimeout as exc:
            if isinstance(exc, DeadlineExceeded) or time.monotonic() >= at - 0.002:
                raise DeadlineExceeded(f"{address}: {header.get('m')}(...) did not end before its deadline") from None
            raise
    finally:
        if scope is not None:
            scope.drop_child(task)


def past_deadline(fut: Any) -> DeadlineExceeded:
    """A read of ``fut`` reached its deadline: the error, kept (every later read raises it too)."""
    d = fut.__dict__
    exc = DeadlineExceeded(f"task {d['_mesh_task']} at {d['_mesh_address']} did not end before its deadline")
    with d["_mesh_lock"]:
        if d["_mesh_exc"] is None:
            d["_mesh_exc"] = exc
    return d["_mesh_exc"] if isinstance(d["_mesh_exc"], MeshError) else exc


def cancel_future(fut: Any) -> bool:
    """``fut.cancel()``: stop its task (and what it started); True if it was stopped before it finished."""
    d = fut.__dict__
    if fut._mesh_state() != "pending":
        forward = d.get("_mesh_forward")  # its value is another call's future: that one is still the work
        return forward is not None and cancel_future(forward)
    call = d["_mesh_call"]
    if call is not None and call.done():  # the reply is here: done, unless it forwards a future
        try:
            fut.result(0)
        except MeshError:
            pass
        forward = d.get("_mesh_forward")
        return forward is not None and cancel_future(forward)
    address, task = d["_mesh_address"], d["_mesh_task"]
    try:
        reply = wait(get_client().request(address, {"op": wire.CANCEL, "task": task}, None, timeout=_CANCEL_TIMEOUT),
                     None, address)
        stopped = decode_reply(reply, address) is True
    except MeshError:  # unreachable, or a server older than cancel (1.3): nothing was stopped
        return False
    if stopped:
        with d["_mesh_lock"]:
            if d["_mesh_exc"] is None:
                d["_mesh_exc"] = Cancelled(f"task {task} at {address} was cancelled")
    return stopped


def abandon(fut: Any) -> None:
    """An ``await`` of ``fut`` (or an ``async for`` of a stream) was cancelled: its asyncio task was.

    The remote task is cancelled too (one-way: the loop never waits for the answer), when this
    process made the call and it has not ended; ``asyncio.shield(fut)`` keeps it running. A copy
    of a future (passed to this process) is left alone: its task is someone else's to stop. When
    the cancel is ``asyncio.run()``'s answer to Ctrl-C, everything this process started is
    cancelled, as Ctrl-C in a sync wait does.
    """
    interrupt = _runner_interrupt()
    if interrupt is not None and interrupt != _handled[0]:
        _handled[0] = interrupt
        _on_interrupt()
    d = fut.__dict__
    call = d.get("_mesh_call")
    if call is None:
        return
    if not call.done():
        send_cancel(d["_mesh_address"], d["_mesh_task"])
        return
    forward = d.get("_mesh_forward")  # its value is another call's future: that one is still the work
    if forward is not None and not forward.done():
        send_cancel(forward.__dict__["_mesh_address"], forward.__dict__["_mesh_task"])


def _runner_interrupt() -> tuple[int, int] | None:
    """``(runner id, interrupt count)`` while ``asyncio.run()``'s runner handles a Ctrl-C, else None.

    Its SIGINT handler is ``functools.partial(runner._on_sigint, main_task=...)``, and it counts
    the interrupts in ``_interrupt_count`` (CPython 3.11 to 3.13); anything else: None.
    """
    try:
        handler = signal.getsignal(signal.SIGINT)
    except (ValueError, OSError):
        return None
    runner = getattr(getattr(handler, "func", None), "__self__", None)
    count = getattr(runner, "_interrupt_count", 0)
    return (id(runner), count) if type(count) is int and count > 0 else None


_handled: list[Any] = [None]  # the last asyncio.run() interrupt whose cancels were sent


def cancel_started() -> None:
    """Ctrl-C: cancel every call this process's session has queued or running on the servers it called."""
    client = get_client()
    futures = []
    for address in client.peers.leased():
        try:
            futures.append((address, client.request(address, {"op": wire.CANCEL, "all": 1}, None, timeout=_INTERRUPT_WAIT)))
        except MeshError:
            continue
    end = time.monotonic() + _INTERRUPT_WAIT
    for address, fut in futures:
        try:
            wait(fut, end, address)
        except (MeshError, KeyboardInterrupt):  # a second Ctrl-C: stop waiting
            continue


def exiting() -> None:
    """At exit (before the child server stops): a process ended by Ctrl-C cancels what it started.

    Covers a Ctrl-C that met no wait on a mesh future (``asyncio.run()`` interrupted between
    awaits, a ``time.sleep``): the interpreter keeps the uncaught exception in ``sys.last_value``.
    Skipped when the Ctrl-C cancel ran a moment ago (in the wait the interrupt came through).
    """
    if not isinstance(getattr(sys, "last_value", None), KeyboardInterrupt) or runtime.current(create=False) is None:
        return
    if time.monotonic() - _last_interrupt[0] > _RECENT:
        _on_interrupt()


_RECENT = 2.0  # s: a Ctrl-C cancel this recent covers the interrupt the process dies of
_last_interrupt = [float("-inf")]  # time.monotonic() of the last Ctrl-C cancel


def _on_interrupt() -> None:
    global _interrupting
    if _interrupting:  # a second Ctrl-C while the first one's cancels are out
        return
    _interrupting = True
    _last_interrupt[0] = time.monotonic()
    try:
        cancel_started()
    except Exception:  # noqa: BLE001 - never hide the KeyboardInterrupt behind a failed cancel
        pass
    finally:
        _interrupting = False


_interrupting = False
set_interrupt_hook(_on_interrupt)
