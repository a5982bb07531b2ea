"""Staged replies of a server's ROUTERs: small replies to a client that reads batches wait until the
loop's turn ends, then go out as one batch per client (a lone reply alone). A mixin of
:class:`transport._routers.Routers` (which owns ``send``, ``staging`` and the routers' ``staged``)."""

from __future__ import annotations

from typing import Any

from transport._framing import BATCH_BYTES, BATCH_HEADER, BATCH_MAX, SIGNATURE, pack_batch

__all__ = ["Staging"]


class Staging:
    """The staging half of :class:`transport._routers.Routers` (I/O thread only)."""

    staging: set
    send: Any

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

