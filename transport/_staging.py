"""Staged replies of a server's ROUTERs: small replies to a client that reads batches wait until the
loop's turn ends, then go out as one batch per client (a lone reply alone). A mixin of
:class:`transport._routers.Routers` (which owns ``send``, ``staging`` and the routers' ``staged``)."""

from __future__ import annotations

import time
from typing import Any

from transport._framing import BATCH_BYTES, BATCH_HEADER, BATCH_MAX, SIGNATURE, pack_batch

__all__ = ["BACKLOG_POLL_MAX", "BACKLOG_POLL_MIN", "Staging"]

BACKLOG_POLL_MIN, BACKLOG_POLL_MAX = 5, 200  # ms: retry held replies soon, backing off to the max while none go out


class Staging:
    """The staging half of :class:`transport._routers.Routers` and its retries of held replies (I/O thread only)."""

    staging: set
    send: Any
    _try: Any
    loop: Any
    backlogged: set
    backlog_poll: int
    _backlog_due: float
    _flush_scheduled: bool

    def stage(self, router: Any, identity: bytes, header: bytes, body: bytes) -> None:
        """Hold a small reply to a client that reads batches until the loop's turn ends (I/O thread)."""
        if router.backlog.get(identity) is not None:  # held replies count one each (BACKLOG_MAX)
            self.send(router, [identity, SIGNATURE, header, body])
            return
        staged = router.staged.get(identity)
        if staged is None:
            router.staged[identity] = [header, body]
            self.staging.add(router)
            return
        staged.append(header)
        staged.append(body)
        if len(staged) >= 2 * BATCH_MAX:
            self._flush_staged(router, identity)

    def flush(self) -> None:
        """Send the staged replies: one batch per client (a lone reply alone). The loop's turn ended."""
        staging = self.staging
        while staging:
            router = staging.pop()
            for identity in list(router.staged):
                self._flush_staged(router, identity)

    def _flush_staged(self, router: Any, identity: bytes) -> None:
        parts = router.staged.pop(identity)
        if len(parts) == 2:
            self.send(router, [identity, SIGNATURE, parts[0], parts[1]])
            return
        limit = router.announce or BATCH_BYTES
        start, size = 0, 0
        for i in range(0, len(parts), 2):
            n = len(parts[i]) + len(parts[i + 1]) + 8
            if size + n > limit and i > start:
                self._send_batch(router, identity, parts[start:i])
                start, size = i, 0
            size += n
        self._send_batch(router, identity, parts[start:] if start else parts)

    def _send_batch(self, router: Any, identity: bytes, parts: list) -> None:
        if len(parts) == 2:
            self.send(router, [identity, SIGNATURE, parts[0], parts[1]])
        else:
            router.batches_out += 1
            self.send(router, [identity, SIGNATURE, BATCH_HEADER, pack_batch(parts)])

    # ------------------------------------------ held replies (Routers.send): the retries
    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_at(self._backlog_due, self._flush_backlogs)

    def _flush_backlogs(self, _arg: Any = None) -> None:
        self._flush_scheduled = False
        now = time.monotonic()
        sent = False
        for router in list(self.backlogged):
            for identity, frames_list in list(router.backlog.items()):
                while frames_list and self._try(router, frames_list[0]):
                    frames_list.popleft()
                    sent = True
                if not frames_list:
                    del router.backlog[identity]
            if not router.backlog:
                self.backlogged.discard(router)
        # back off while nothing goes out (a client that does not read must not cost a core)
        self.backlog_poll = BACKLOG_POLL_MIN if sent else min(BACKLOG_POLL_MAX, self.backlog_poll * 2)
        self._backlog_due = now + self.backlog_poll / 1000
        if self.backlogged:
            self._schedule_flush()
