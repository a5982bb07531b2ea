"""The release protocol, producer side: who still holds a task's result.

Every handle on a task is a *holder*: the caller that made the call (the owner, ref ``""``)
and each copy unpickled from call arguments (a borrower, with a fresh ref id). When a holder is
garbage-collected its process reports ``[task, ref, [refs of the borrowers it made]]`` (op
``release``); the owner's own handle, never shared, is reported as the bare task id. The
result goes once the owner and every borrower heard of are gone, in whatever order the
reports come (a borrower may be reported before its maker names it). The caller side of the
protocol is ``mesh.client._holders``.

A task whose caller has a session is *held* while that session lives: its result is bounded by
bytes only. When the session ends, its held tasks go with it, unless a copy passed on still
holds them (then they are *loose*: bounded by ``max_len`` / ``max_expire_time``). A holder that was
also pickled elsewhere (to disk, into a result) names ``wire.PINNED_REF`` among its children: copies
of it may still be read, so when no holder is left the task is loosened, not released.

Pure bookkeeping, not thread-safe: :class:`~mesh.server._results.Results` calls it under its lock
and acts on the answers (release or loosen a result).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import Any

from mesh._core.wire import PINNED_REF

__all__ = ["REFS_MAX", "Holders"]

REFS_MAX = 100_000  # shared tasks whose holders are tracked; past this the oldest wait for expiry


class Holders:
    """Holder refs of shared tasks, and the tasks each live session holds."""

    def __init__(self, refs_max: int = REFS_MAX) -> None:
        self.refs_max = refs_max
        # shared task -> [holder refs not yet gone, refs gone before anyone named them, owner's session]
        self._refs: OrderedDict[str, list[Any]] = OrderedDict()
        # session -> tasks its caller still holds (running or stored)
        self._held: dict[str, set[str]] = {}
        # tracked tasks a pickled copy may still read (a holder named PINNED_REF): loosened, never released
        self._pinned: set[str] = set()

    def __len__(self) -> int:
        return len(self._refs)

    # -- held by a session ----------------------------------------------------------------------
    def hold(self, sess: str, task: str) -> None:
        held = self._held.get(sess)  # (not setdefault: it would make a set per call)
        if held is None:
            held = self._held[sess] = set()
        held.add(task)

    def holds(self, sess: str | None, task: str) -> bool:
        held = self._held.get(sess) if sess is not None else None
        return held is not None and task in held

    def held_by(self, sess: str | None) -> set[str] | None:
        """The tasks session ``sess`` holds (the set itself: discarding from it is :meth:`unhold`), or None."""
        return self._held.get(sess) if sess is not None else None

    def unhold(self, sess: str | None, task: str) -> None:
        held = self._held.get(sess) if sess is not None else None
        if held is not None:
            held.discard(task)

    # -- holder refs ----------------------------------------------------------------------------
    def gone(self, task: str, ref: str, children: list, sess: str | None = None) -> tuple[bool, str | None, list[str]]:
        """Holder ``ref`` of ``task`` is gone, naming the borrowers it made.

        Returns:
            ``(done, owner's session, forgotten)``: ``done`` when no holder is left (then the
            owner's session, if it reported itself); ``forgotten``: tasks no longer tracked
            because the table is full, whose results are loose from now on.
        """
        forgotten = []
        if PINNED_REF in children:
            children = [c for c in children if c != PINNED_REF]
            self._pinned.add(task)
        refs = self._refs.get(task)
        if refs is None:
            refs = self._refs[task] = [{""}, set(), None]  # the owner ("") always holds it at first
            if len(self._refs) > self.refs_max:
                old, (_, _, old_owner) = self._refs.popitem(last=False)
                self.unhold(old_owner, old)
                self._pinned.discard(old)
                forgotten.append(old)
        live, gone_early = refs[0], refs[1]
        if ref == "":
            refs[2] = sess  # the owner's own report: its session
        if ref in live:
            live.discard(ref)
        else:
            gone_early.add(ref)  # a borrower whose maker has not reported it yet
        for child in children:
            if child in gone_early:
                gone_early.discard(child)
            else:
                live.add(child)
        if live:
            return False, None, forgotten
        del self._refs[task]
        return True, refs[2], forgotten

    def pinned(self, task: str) -> bool:
        """A holder of ``task`` (no longer tracked) was pickled elsewhere: loosen it, do not release it."""
        if task in self._pinned:
            self._pinned.discard(task)
            return True
        return False

    def end_session(self, sess: str) -> tuple[list[str], list[str]]:
        """The session ended: ``(tasks to release, tasks to loosen)`` (copies passed on, or pickled
        elsewhere, still hold those)."""
        release, loosen = [], []
        for task in self._held.pop(sess, ()):
            refs = self._refs.get(task)
            if refs is not None:
                refs[0].discard("")  # the owner is gone now (nothing happens if it said so already)
                if refs[0]:
                    loosen.append(task)
                    continue
                del self._refs[task]
                if self.pinned(task):
                    loosen.append(task)
                    continue
            release.append(task)
        return release, loosen

    def oldest(self, most: int) -> list[str]:
        """Up to ``most`` tracked tasks, oldest first (to prune those whose results are gone)."""
        return list(itertools.islice(self._refs, most))

    def forget(self, tasks: list[str]) -> None:
        for task in tasks:
            self._refs.pop(task, None)
            self._pinned.discard(task)
