"""The fast lane of a plain sync call: request, inline run and reply in one pass on the I/O thread.

:meth:`~mesh.server._dispatch.Servicer.handle` serves every op through the general machinery (the
header check, a :class:`~mesh.server._mailbox.Call`, admission, :meth:`CallRunner._run_one`, the
results store and cancel registry, a reply closure). A request that is a plain sync call (only
``op``, ``obj``, ``m``, ``id`` and optionally ``chain`` and ``sess``: no task, no deadline, no
trace context, no buffers) of an idle object whose method may run inline
(:class:`~mesh.server._inline.InlinePolicy`), on a server that does not trace, needs none of
that: :class:`FastLane` checks the fields it reads exactly as :func:`~mesh.server._checks.check_header`
would, admits the call under the actor's lock, runs it and answers with a packed header
template (:func:`transport.ok_header`). Everything else, and everything it is unsure of, goes to
``Servicer.handle`` untouched (nothing has changed at that point).

What a run keeps from the general inline path: the call chain and ``blocking()`` hooks (a wait
hands the I/O loop off and lets the chain's queued calls in, so A->B->A re-enters), the watchdog
around the method, the inline history, the server's call stats, the session touch, errors as
``call_error`` entries, and the mailbox's next call after it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import msgpack

import transport
from mesh._core import context, tracing, wire
from mesh._core.methods import runs_on_loop
from mesh.server._calls import call_error, ok, result_of
from mesh.server._checks import ID_MAX, NAME_MAX
from mesh.server._mailbox import Actor, Call
from mesh.server._results import shut_down

__all__ = ["FastLane"]

_get_ident = threading.get_ident
_monotonic = time.monotonic
_perf = time.perf_counter
_decode = transport.decode
_ok_header = transport.ok_header
_local = context._local
_unpackb = msgpack.unpackb
_packb = msgpack.packb
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # the codec pickles ints outside
_OK = {"op": wire.OK}  # the header of a plain ok entry made here (never changed: read only)
_NO_BUFFERS: list = []


def _not_plain(code: int, data: bytes) -> Any:
    raise ValueError("an ext value: decoded by the codec")


class FastLane:
    """The request handler of a server's ROUTER: plain sync calls here, the rest to ``servicer.handle``."""

    __slots__ = ("servicer", "slow", "calls", "actors", "seen")

    def __init__(self, servicer: Any) -> None:
        self.servicer = servicer
        self.slow = servicer.handle
        self.calls = servicer.calls
        self.actors = servicer.objects.actors
        self.seen = servicer.sessions.seen  # Sessions.touch, inlined

    def handle(self, router: Any, identity: bytes, header: dict, body: Any, buffers: list) -> bool | None:
        """Serve one request (I/O thread; never blocks on its own, never raises). True: a sync
        call answered here (the ROUTER's burst ends; see :class:`transport.Router`)."""
        get = header.get
        if get("op") != wire.CALL or buffers:
            return self.slow(router, identity, header, body, buffers)
        obj, method, rid, chain, sess = get("obj"), get("m"), get("id"), get("chain"), get("sess")
        if (len(header) != 4 + (chain is not None) + (sess is not None) or type(rid) is not int
                or type(obj) is not str or len(obj) > ID_MAX or type(method) is not str or len(method) > NAME_MAX
                or (chain is not None and (type(chain) is not str or len(chain) > ID_MAX))
                or (sess is not None and (type(sess) is not str or len(sess) > ID_MAX))):
            return self.slow(router, identity, header, body, buffers)
        actor = self.actors.get(obj)
        calls = self.calls
        if (actor is None or actor.durable is not None or not self.servicer.accepting or calls.node is None
                or not calls.inline.allows(type(actor.obj), method) or tracing.enabled()):
            return self.slow(router, identity, header, body, buffers)
        with actor.lock:  # admission as Actor.admit, for an idle actor only (nothing queued before it)
            if actor.running or actor.failed:
                idle = False
            else:
                actor.running = idle = 1
        if not idle:
            return self.slow(router, identity, header, body, buffers)
        t0 = _monotonic()
        if sess is not None:
            self.seen[sess] = t0
        self._run(actor, method, chain, body, router, identity, rid, t0)
        return True

    def _run(self, actor: Actor, method: str, chain: Any, body: Any, router: Any, identity: bytes, rid: int,
             t0: float) -> None:
        calls = self.calls
        ident = _get_ident()
        waited = False

        def on_block() -> None:  # as CallRunner._run_one's inline hooks
            nonlocal waited
            waited = True
            watchdog = calls.watchdog
            with watchdog.lock:
                if watchdog.current is not None:
                    watchdog.current = None
                    calls._hand_off(ident)
            for c in actor.block(chain):
                calls._submit(actor, c)

        def on_unblock() -> None:
            actor.unblock(chain)

        obj = actor.obj
        cls = type(obj)
        inline = calls.inline
        local = _local  # context.set_context, inlined (the scope stays None: a sync call without deadline)
        local.chain, local.on_block, local.on_unblock = chain, on_block, on_unblock
        try:
            try:  # plain arguments in one unpack; anything else (a tuple, a pickle...) through the codec
                args, kwargs = _unpackb(body, raw=False, strict_map_key=False, ext_hook=_not_plain)
            except Exception:
                args, kwargs = _decode(body)
            if method.startswith("_") and method != "__call__":
                raise AttributeError(f"{method!r} is private: private methods are never called remotely")
            fn = getattr(obj, method)
            if runs_on_loop(cls, method, fn):  # shadowed by a coroutine function: the event loop runs it
                call = Call(lambda e: _answer(router, identity, rid, e), method, body, [], chain, None, False)
                call.t0 = t0
                if calls._to_loop(actor, call, fn, args, kwargs):
                    return  # its task answers, and starts the actor's next call
                entry = shut_down()
            else:
                watchdog = calls.watchdog
                t = _monotonic()
                watchdog.begin(ident)  # it covers the method only: this thread sends the reply after it
                try:
                    value = fn(*args, **kwargs)
                finally:
                    watchdog.end()
                entry = _plain_ok(value) or ok(result_of(cls, method, value))
                if waited:
                    inline.waited(cls, method)
                else:
                    inline.record(cls, method, _monotonic() - t)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            entry = call_error(exc)
            if waited:
                inline.waited(cls, method)
        finally:
            local.chain = local.on_block = local.on_unblock = None
        actor.served += 1
        head = entry[0]
        calls.stats.record(actor.cls_name, method, t0, head)
        if head is _OK:
            router.reply_packed(identity, _ok_header(rid), entry[1])
        else:
            _answer(router, identity, rid, entry)
        calls.next(actor)


def _plain_ok(value: Any) -> Any:
    """The ok entry of a plain result, packed as the codec packs it; None for anything else (or a
    str that does not encode: the codec's error entry says so)."""
    kind = type(value)
    if kind is str or kind is float or kind is bool or value is None or (kind is int and _INT_MIN <= value <= _INT_MAX):
        try:
            return _OK, _packb(value), _NO_BUFFERS
        except Exception:
            return None
    return None


def _answer(router: Any, identity: bytes, rid: int, entry: Any) -> None:
    head = entry[0]
    if len(head) == 1 and head.get("op") == wire.OK:
        router.reply_packed(identity, _ok_header(rid), entry[1], entry[2])
    else:
        router.reply(identity, {**head, "re": rid}, entry[1], entry[2])
