"""What the server's fast lanes (``_inline_fast``, ``_async_fast``, ``_coro_fast``) share: the
``blocking()`` hooks of an inline call on an I/O thread, the decoding of a call's arguments, and
the reply function of a kept call."""

from __future__ import annotations

from typing import Any

import msgpack

import transport
from mesh._core import wire

__all__ = ["_Hooks", "call_args", "packed_plain", "replier"]

_unpackb = msgpack.unpackb
_decode = transport.decode
_pack_plain = transport.pack_plain
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # the codec pickles ints outside


def _not_plain(code: int, data: bytes) -> Any:
    raise ValueError("an ext value: decoded by the codec")


def call_args(body: Any) -> Any:
    """``(args, kwargs)`` of a call's body: plain arguments in one unpack; anything else (a tuple, a
    pickle...) through the codec, which raises ``CodecError`` for a body it cannot read."""
    try:
        return _unpackb(body, raw=False, strict_map_key=False, ext_hook=_not_plain)
    except Exception:
        return _decode(body)


def packed_plain(value: Any, pack: Any = _pack_plain) -> bytes | None:
    """``value`` packed here when it is a str, float, bool, None or an int msgpack holds; else None
    (for the codec: a str that does not encode gets the codec's error entry there). ``pack``: a
    packer's ``pack`` the caller owns (see :class:`_Hooks`), else this thread's."""
    kind = type(value)
    if kind is str or kind is float or kind is bool or value is None or (
            kind is int and _INT_MIN <= value <= _INT_MAX):
        try:
            return pack(value)
        except Exception:  # noqa: BLE001 - a str that does not encode
            return None
    return None


def replier(router: Any, identity: bytes, rid: int) -> Any:
    """The reply function of a kept call made by a lane (a :class:`Call`'s ``reply``): a plain ``ok``
    from its template (batched for a batching client), anything else as a full reply."""

    def reply(entry: Any) -> None:
        head = entry[0]
        if not entry[2] and len(head) == 1 and head.get("op") == wire.OK:
            router.reply_ok(identity, rid, entry[1])
        else:
            router.reply(identity, {**head, "re": rid}, entry[1], entry[2])

    return reply


class _Hooks:
    """The ``blocking()`` hooks of the inline call running on an I/O thread (as :meth:`CallRunner._run_one`'s).

    One is kept by the lane and reused call after call; a call that is still running when the
    next one starts (its thread handed the I/O loop off) keeps its own, and the lane makes another.
    """

    __slots__ = ("calls", "actor", "chain", "ident", "waited", "busy", "on_block", "on_unblock", "pack")

    def __init__(self, calls: Any) -> None:
        self.calls = calls
        self.actor: Any = None
        self.chain: Any = None
        self.ident = 0
        self.waited = False
        self.busy = False
        self.on_block = self._on_block  # bound once: the context holds these, not new closures per call
        self.on_unblock = self._on_unblock
        # the result's packer of the call these hooks serve (one call at a time: busy), so the lane
        # needs no thread-local look-up (transport.pack_plain's) per call
        self.pack = msgpack.Packer(use_bin_type=True).pack

    def _on_block(self) -> None:
        self.waited = True
        calls, actor = self.calls, self.actor
        watchdog = calls.watchdog
        with watchdog.lock:
            if watchdog.current is not None:
                watchdog.current = None
                calls._hand_off(self.ident)
        for c in actor.block(self.chain):
            calls._submit(actor, c)

    def _on_unblock(self) -> None:
        self.actor.unblock(self.chain)
