"""Task results: the store, the fetches waiting for them, and their release.

A task is *pending* from the moment its async call arrives until it ends; fetches (op
``result``) that come meanwhile wait for it. A fetch may overtake the call that makes the task
(another socket, another route): a task this run has not seen is waited for a grace period
(:data:`_EARLY_GRACE`), unless a Redis copy answers at once. A result this server no longer
has in memory is looked up in its Redis copy, off the I/O thread.

No sockets: answers go to callables taking an :data:`~mesh._core.wire.Entry`, so this is
testable with a :class:`~mesh.server._store.LocalPool` alone.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import transport
from mesh._core import wire
from mesh._core.wire import Entry
from mesh.server._holders import Holders
from mesh.server._store import ResultPool

__all__ = ["Results", "expired", "shut_down"]

log = logging.getLogger("mesh.server")

_EARLY_GRACE = 5.0  # seconds a fetch waits for a task this server has not seen yet
_SEEN_MAX = 100_000  # task ids remembered, to tell "gone" from "not arrived yet"
_EARLY_MAX = 10_000  # fetches waiting for unseen tasks; past this they are answered at once
_NO_WAITERS: tuple = ()  # the waiters of a running task that no fetch waits for yet (shared)

Waiter = Callable[[Entry], None]


def expired(task: str) -> Entry:
    return wire.err_entry(
        wire.K_EXPIRED,
        f"no result for task {task} on this server: it expired (max_expire_time / max_len), "
        "was released, or never existed",
    )


def shut_down() -> Entry:
    return wire.err_entry(wire.K_UNAVAILABLE, "server shut down before running this call")


class Results:
    """The results of one server's async calls (thread-safe: I/O thread and workers)."""

    def __init__(self, pool: ResultPool, name: str = "") -> None:
        self.pool = pool
        self.holders = Holders()
        self._pending: dict[str, list[Waiter]] = {}
        self._discard: set[str] = set()  # released before they finished
        # recent task ids (gone, not "not yet here"): the newest, and the generation before it; the
        # last _SEEN_MAX / 2 at least (two sets: cheaper per call than an ordered dict)
        self._seen: set[str] = set()
        self._seen_old: set[str] = set()
        self._early: dict[str, float] = {}  # fetches waiting for their task to arrive -> deadline
        self._lock = threading.Lock()
        self.on_release: Callable[[str], None] | None = None  # told when no holder of a task is left (streams)
        self.streams_open: Callable[[], Any] = lambda: True  # whether on_release can matter (any stream kept)
        # Results are answered from memory; a Redis copy (results this server no longer has in
        # memory, e.g. of an earlier run) is read off the I/O thread.
        self._stored = getattr(pool, "get_stored", None)
        self._executor = None if self._stored is None else ThreadPoolExecutor(4, thread_name_prefix=f"mesh-pool-{name}")

    # -- a task's life ----------------------------------------------------------------------------
    def expect(self, task: str, sess: str | None) -> None:
        """An async call of ``task`` arrived (``sess``: its caller's session, which holds it)."""
        with self._lock:
            pending = self._pending
            if task not in pending:  # (a fetch that came first made its list: it stays)
                pending[task] = _NO_WAITERS
            if self._early:
                self._early.pop(task, None)
            seen = self._seen
            seen.add(task)
            if len(seen) > _SEEN_MAX // 2:
                self._seen_old, self._seen = seen, set()
            if sess is not None:
                self.holders.hold(sess, task)

    def complete(self, task: str, sess: str | None, entry: Entry, first: Callable[[bool], None] | None = None) -> bool:
        """The task ended with ``entry``: store it (unless released) and answer its fetches. True if stored.

        ``first(stored)``, if given, is called after the store and before the fetches are answered
        (the caller's own reply goes out ahead of a large value's fetch replies)."""
        with self._lock:
            discard = task in self._discard
            held = self.holders.holds(sess, task)
            if discard and held:
                self.holders.unhold(sess, task)
        stored = False
        if not discard:
            try:
                # memory only (a Redis copy is written later, by another thread): never blocks
                self.pool.put(task, entry, held=held)
                stored = True
            except Exception as exc:  # noqa: BLE001 - the caller still gets the value, whole
                log.warning("could not store result %s: %s", task, exc)
        with self._lock:  # after the put: a `result` request never finds neither
            waiters = self._pending.pop(task, ())
            released_meanwhile = task in self._discard
            self._discard.discard(task)
            if released_meanwhile:
                self.holders.unhold(sess, task)
        if released_meanwhile and not discard:
            self.pool.release(task)
        if first is not None:
            first(stored)
        for waiter in waiters:
            waiter(entry)
        return stored

    def store_now(self, task: str, sess: str | None, entry: Entry) -> bool:
        """:meth:`expect` and :meth:`complete` of a task that arrived and ended in one go, on the
        I/O thread (the server's async fast lane: nothing else read a request meanwhile, so no
        release of it can have come). The value is stored first: a fetch from another thread
        that finds neither it nor the task seen waits for it as an early fetch, answered below.
        True if stored."""
        stored = False
        try:
            self.pool.put(task, entry, held=sess is not None)  # memory only: never blocks
            stored = True
        except Exception as exc:  # noqa: BLE001 - the caller still gets the value, whole
            log.warning("could not store result %s: %s", task, exc)
        with self._lock:
            seen = self._seen
            seen.add(task)
            if len(seen) > _SEEN_MAX // 2:
                self._seen_old, self._seen = seen, set()
            waiters = self._pending.pop(task, None) if self._pending else None
            if waiters is not None:
                self._early.pop(task, None)
            if sess is not None:
                self.holders.hold(sess, task)
        if waiters:
            for waiter in waiters:
                waiter(entry)
        return stored

    # -- fetches ----------------------------------------------------------------------------------
    def _wait(self, task: str, waiters: Any, fn: Waiter) -> None:
        # caller holds the lock; a running task's waiters are the shared empty tuple until one comes
        if waiters is _NO_WAITERS:
            self._pending[task] = [fn]
        else:
            waiters.append(fn)

    def when_done(self, task: str, fn: Waiter, wait_unseen: bool = True, stored_checked: bool = False) -> None:
        """Answer ``fn`` with the task's result: now from memory, when it ends if it runs, else "expired".

        Never blocks: a result this server does not have in memory is looked up in its Redis
        copy (if any) on the executor.
        """
        entry = self.pool.get(task)
        if entry is None:
            with self._lock:
                waiters = self._pending.get(task)
                if waiters is not None:
                    self._wait(task, waiters, fn)
                    return
                unseen = wait_unseen and task not in self._seen and task not in self._seen_old
            if unseen and self._stored is not None and not stored_checked:
                self._unseen_from_store(task, fn)  # e.g. made by an earlier run: no need to wait for it
                return
            with self._lock:
                waiters = self._pending.get(task)
                if waiters is not None:
                    self._wait(task, waiters, fn)
                    return
                if unseen and task not in self._seen and task not in self._seen_old and len(self._early) < _EARLY_MAX:
                    # Not arrived yet: a consumer's fetch can overtake the call that makes the
                    # task (another socket, another route). Wait for it, a bounded time.
                    self._pending[task] = [fn]
                    self._early[task] = time.monotonic() + _EARLY_GRACE
                    return
            entry = self.pool.get(task)
            if entry is None:
                self._answer_stored(task, [fn])
                return
        fn(entry)

    def _unseen_from_store(self, task: str, fn: Waiter) -> None:
        """A task this run has not seen: its Redis copy if there is one, else wait for it as usual."""

        def read() -> None:
            try:
                entry = self._stored(task)  # type: ignore[misc]
            except Exception:  # noqa: BLE001 - Redis down: wait for the task as without Redis
                entry = None
            if entry is not None:
                fn(entry)
            else:
                self.when_done(task, fn, True, stored_checked=True)

        self._off_thread(read, [fn])

    def _answer_stored(self, task: str, waiters: Any) -> None:
        """Answer with the Redis copy of ``task`` (off the I/O thread), or "expired" without one."""
        if self._stored is None:
            for waiter in waiters:
                waiter(expired(task))
            return

        def read() -> None:
            try:
                entry = self._stored(task) or expired(task)  # type: ignore[misc]
            except Exception as exc:  # noqa: BLE001 - e.g. Redis down: answer anyway, never leave a fetch waiting
                entry = wire.err_entry(wire.K_UNAVAILABLE, f"this server no longer holds result {task} in memory, and its result pool: {exc}")
            for waiter in waiters:
                waiter(entry)

        self._off_thread(read, waiters)

    def _off_thread(self, read: Callable[[], None], waiters: Any) -> None:
        try:
            self._executor.submit(read)  # type: ignore[union-attr]
        except RuntimeError:  # shutting down
            for waiter in waiters:
                waiter(shut_down())

    def expire_early(self) -> None:
        """Answer fetches whose task never arrived within the grace period (a timer, I/O thread)."""
        if not self._early:
            return
        now = time.monotonic()
        late = []
        with self._lock:
            for task, deadline in list(self._early.items()):
                if deadline <= now:
                    del self._early[task]
                    self._discard.discard(task)  # released while we waited: nothing left to drop
                    late.append((task, self._pending.pop(task, ())))
        for task, waiters in late:
            try:
                entry = self.pool.get(task)
            except Exception as exc:  # noqa: BLE001 - answer anyway, never leave a fetch waiting
                entry = wire.err_entry(wire.K_UNAVAILABLE, f"result pool: {exc}")
            if entry is None:
                self._answer_stored(task, waiters)
            else:
                for waiter in waiters:
                    waiter(entry)

    def local_result(self, task: str, this_run: bool = True) -> transport.ReplyFuture:
        """Fetch a result from inside this server's own process (no network)."""
        fut = transport.ReplyFuture()
        try:
            self.when_done(task, lambda e: fut.set_result((dict(e[0]), e[1], e[2])), this_run)
        except Exception as exc:  # noqa: BLE001
            fut.set_result(wire.err_entry(wire.K_UNAVAILABLE, f"result pool: {exc}"))
        return fut

    # -- release ----------------------------------------------------------------------------------
    def release_items(self, items: list, sess: str | None) -> None:
        """Op ``release``: each item is an owner's task id or ``[task, ref, children]`` (a holder gone)."""
        plain = [item for item in items if type(item) is str]  # the owner's handles, never shared
        if plain:
            self._release_plain(plain, sess)
        for item in items:  # checked by check_header()
            if type(item) is str:
                continue
            with self._lock:
                done, owner, forgotten = self.holders.gone(item[0], item[1], item[2], sess)
                pinned = done and self.holders.pinned(item[0])
                if pinned:  # a pickled copy may still read it: loose now (stored loose if it still runs)
                    self.holders.unhold(owner, item[0])
                    forgotten.append(item[0])
                loosen = [t for t in forgotten if t not in self._pending]
            for task in loosen:  # forgotten or pinned: loose from now on (max_len / max_expire_time)
                self.pool.loosen(task)
            if done and not pinned:
                self.release(item[0], owner)

    def _release_plain(self, tasks: list[str], owner: str | None) -> None:
        """:meth:`release` of many tasks of one owner, under one lock (a ``release`` of a batch)."""
        on_release = self.on_release
        if on_release is not None and self.streams_open():
            for task in tasks:
                on_release(task)
        drop = []
        with self._lock:
            held, pending, discard = self.holders.held_by(owner), self._pending, self._discard
            if held is not None:
                held.difference_update(tasks)
            if pending:
                for task in tasks:
                    if task in pending:  # still running: drop the result when it ends
                        discard.add(task)
                    else:
                        drop.append(task)
            else:
                drop = tasks
        many = getattr(self.pool, "release_many", None)
        if many is not None:
            many(drop)
        else:
            for task in drop:
                self.pool.release(task)

    def release(self, task: str, owner: str | None = None) -> None:
        """Nobody holds ``task`` any more: drop its result (when it ends, if it still runs)."""
        if self.on_release is not None:
            self.on_release(task)
        with self._lock:
            self.holders.unhold(owner, task)
            if task in self._pending:  # still running: drop the result when it ends
                self._discard.add(task)
                return
        self.pool.release(task)

    def end_session(self, sess: str) -> None:
        """Its caller is gone: its results go with it, unless a copy of the future it passed on
        still holds them (then they are loose: bounded by max_len / max_expire_time from now)."""
        with self._lock:
            release, loosen = self.holders.end_session(sess)
            loosen = [t for t in loosen if t not in self._pending]  # a running one is stored loose when it ends
        for task in loosen:
            self.pool.loosen(task)
        for task in release:
            self.release(task)

    def prune(self, most: int = 10_000) -> None:
        """Forget holder counts of results the pool no longer has (expired, evicted); oldest first."""
        if not len(self.holders):
            return
        with self._lock:
            tasks = self.holders.oldest(most)
        gone = [t for t in tasks if t not in self._pending and self.pool.get(t) is None]
        with self._lock:
            self.holders.forget(gone)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self.pool.close()
