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

import sys
import threading
import time
from typing import Any


import msgpack

import transport
from mesh._core import context, tracing, wire
from mesh._core.methods import _ON_LOOP, runs_on_loop
from mesh.server._lane_parts import _INT_MAX, _INT_MIN, _Hooks, _not_plain
from mesh.server._calls import call_error, ok, result_of
from mesh.server._checks import ID_MAX, NAME_MAX
from mesh.server._inline import _ALPHA, _SLOW_RUN, WARMUP
from mesh.server._mailbox import Call
from mesh.server._results import shut_down

__all__ = ["FastLane"]

_get_ident = threading.get_ident
_modules = sys.modules
_find = bytes.find  # (a method descriptor: no bound method made per call)
_monotonic = time.monotonic
_ok_header = transport.ok_header
_local = context._local
_OK = {"op": wire.OK}  # the header of a plain ok entry made here (never changed: read only)
_KNOWN_MAX = 1024  # FastLane.known entries kept (cleared past it)
# the longest header a template layout can have: op, obj (ID_MAX chars), m (NAME_MAX), sess (ID_MAX), a
# fixstr chain and a uint64 id, 4 bytes a UTF-8 char at most
_RAW_HEAD_MAX = 64 + 4 * (2 * ID_MAX + NAME_MAX)
_OK_ENTRY = (_OK, b"\xc0", [])  # stands for a plain ok packed by FastLane._run itself (read only)
_unpackb = msgpack.unpackb
_decode = transport.decode
_OK_RE = _ok_header(0)[:-1]  # an ok reply's header up to its "re" value (transport.ok_header)
_CHAIN_KEY = b"\xa5chain"
_UINT = {0xCC: (2, 128), 0xCD: (3, 256), 0xCE: (5, 65536), 0xCF: (9, 2**32)}  # head -> (length, least value)
_TEMPLATE_KEYS = ({"op", "obj", "m", "chain", "id"}, {"op", "obj", "m", "sess", "chain", "id"})


class _Template:
    """A request header layout the raw lane knows: its bytes up to the chain are the ``obj``, ``m``
    and ``sess`` below; the actor, inline history and stats row of the last call, checked per call."""

    __slots__ = ("obj_id", "method", "sess", "cls", "hist", "row")

    def __init__(self, obj_id: str, method: str, sess: str | None) -> None:
        self.obj_id, self.method, self.sess = obj_id, method, sess
        self.cls: Any = None  # the class of the object served last (not its Actor: kept past a delete)
        self.hist: Any = None
        self.row: Any = None


class FastLane:
    """The request handler of a server's ROUTER: plain sync calls here, the rest to ``servicer.handle``."""

    __slots__ = ("servicer", "slow", "calls", "actors", "seen", "hooks", "kept", "known", "templates")

    def __init__(self, servicer: Any) -> None:
        from mesh.server._async_fast import KeptLane  # (loaded with the first server)

        self.servicer = servicer
        self.slow = servicer.handle
        self.calls = servicer.calls
        self.actors = servicer.objects.actors
        self.seen = servicer.sessions.seen  # Sessions.touch, inlined
        self.hooks = _Hooks(self.calls)
        self.kept = KeptLane(servicer).handle  # plain kept calls (.remote(), @async_func)
        # (obj, m, sess) of a request that passed the header checks -> (fields besides "chain",
        # its actor, the method's inline history entry): a later call of the same checks only its
        # chain and id, and that the object's actor is still that one (an actor's object is set
        # once, before it serves: mesh.server._objects; a durable one goes to the slow path)
        self.known: dict[tuple, tuple] = {}
        # a request header's bytes up to its chain's value -> its _Template, or False (not a plain
        # sync call's layout: the usual path, checked once); see raw()
        self.templates: dict[bytes, Any] = {}

    def raw(self, router: Any, identity: bytes, head: bytes, body: bytes) -> bool | None:
        """The ROUTER's raw hook (:class:`transport.Router`): a plain sync call whose header is a
        known layout (the bytes before the chain as in an earlier call that passed the full checks,
        then a short chain and a plain uint id, and nothing after) is served from its bytes, with
        no header map and no per-field check; None for anything else (the header is parsed, then
        :meth:`handle` decides: nothing has changed at that point). Same checks, same run."""
        if len(head) > _RAW_HEAD_MAX:  # (never a template: the usual path checks its size first)
            return None
        i = _find(head, _CHAIN_KEY) + 6
        if i < 6:
            return None
        t = self.templates.get(head[:i])
        if not t or len(head) <= i:
            if t is None:
                self._learn(head, i)
            return None
        n = head[i] - 0xA0  # the chain: a fixstr (at most 31 bytes: under ID_MAX)
        k = i + 1 + n
        if not 0 <= n < 32 or head[k:k + 3] != b"\xa2id":
            return None
        packed_id = head[k + 3:]
        m = len(packed_id)
        if m == 1:
            rid = packed_id[0]
            if rid >= 0x80:
                return None
        else:
            size, least = _UINT.get(packed_id[0] if m else 0, (-1, 0))
            if m != size or (rid := int.from_bytes(packed_id[1:], "big")) < least:
                return None  # (not the shortest form: the reply's "re" would differ from ok_header's)
        try:
            chain = head[i + 1:k].decode()
        except UnicodeDecodeError:
            return None
        actor = self.actors.get(t.obj_id)
        if actor is None:
            return None
        if type(actor.obj) is not t.cls or t.hist is None:
            t.cls, t.hist = type(actor.obj), self.calls.inline.history(type(actor.obj), t.method)
            t.row = self.calls.stats.row(actor.cls_name, t.method)
            if t.hist is None:
                return None
        calls, hist = self.calls, t.hist
        if (actor.durable is not None or not self.servicer.accepting or calls.node is None
                or hist[0] < WARMUP or hist[2] or hist[1] >= calls.inline.threshold  # (InlinePolicy.allows_entry)
                or ("opentelemetry.trace" in _modules and tracing.enabled())
                or not actor.enter_idle()):
            return None
        t0 = _monotonic()
        if t.sess is not None:
            self.seen[t.sess] = t0
        return self._run(actor, t.method, chain, body, router, identity, rid, t0, hist, _OK_RE + packed_id, t.row)

    def _learn(self, head: bytes, i: int) -> None:
        """Remember the layout of ``head`` up to byte ``i`` (just before its chain's value): a
        :class:`_Template` when the header is a plain sync call that the full checks of
        :meth:`handle` let through and its bytes are exactly that prefix, the chain and the id;
        False when the layout is another (a kept call's, a trace's: never looked at again)."""
        templates = self.templates
        if len(templates) >= _KNOWN_MAX:
            templates.clear()
        try:
            header = _unpackb(head, raw=False, strict_map_key=True)
        except Exception:
            templates[head[:i]] = False
            return
        if type(header) is not dict or header.get("op") != wire.CALL:
            templates[head[:i]] = False
            return
        get = header.get
        obj_id, method, rid, chain, sess = get("obj"), get("m"), get("id"), get("chain"), get("sess")
        if type(chain) is not str or type(rid) is not int or rid < 0:
            return  # this call's fields, not the layout: a later call may teach it
        if (list(header)[-2:] != ["chain", "id"] or set(header) not in _TEMPLATE_KEYS
                or type(obj_id) is not str or len(obj_id) > ID_MAX or type(method) is not str
                or len(method) > NAME_MAX or (sess is not None and (type(sess) is not str or len(sess) > ID_MAX))
                or ("sess" in header and sess is None) or (method.startswith("_") and method != "__call__")
                or head[:i] + transport.pack_str(chain) + b"\xa2id" + transport.pack_uint(rid) != head):
            templates[head[:i]] = False
            return
        templates[head[:i]] = _Template(obj_id, method, sess)

    def handle(self, router: Any, identity: bytes, header: dict, body: Any, buffers: list) -> bool | None:
        """Serve one request (I/O thread; never blocks on its own, never raises). True: a sync
        call answered here (the ROUTER's burst ends; see :class:`transport.Router`)."""
        get = header.get
        if get("op") != wire.CALL or buffers:
            return self.slow(router, identity, header, body, buffers)
        if "keep" in header:
            return self.kept(router, identity, header, body)
        obj_id, method, rid, chain, sess = get("obj"), get("m"), get("id"), get("chain"), get("sess")
        calls = self.calls
        try:  # the object, method and session checked by an earlier call (the chain is new per call)
            known = self.known.get((obj_id, method, sess))
        except TypeError:  # an unhashable field (a list, a map): the checks below send it to slow
            known = None
        if known is not None:
            fields, cls, hist = known
            actor = self.actors.get(obj_id)
            if (len(header) != fields + (chain is not None) or type(rid) is not int
                    or (chain is not None and (type(chain) is not str or len(chain) > ID_MAX))
                    or actor is None or type(actor.obj) is not cls):
                known = None  # the full checks decide
        if known is None:
            if getattr(router, "raw", 0) is None:  # (the ROUTER's raw hook: known layouts go there first from now on)
                router.raw = self.raw
            if (len(header) != 4 + (chain is not None) + (sess is not None) or type(rid) is not int
                    or type(obj_id) is not str or len(obj_id) > ID_MAX or type(method) is not str
                    or len(method) > NAME_MAX or (chain is not None and (type(chain) is not str or len(chain) > ID_MAX))
                    or (sess is not None and (type(sess) is not str or len(sess) > ID_MAX))):
                return self.slow(router, identity, header, body, buffers)
            actor = self.actors.get(obj_id)
            if actor is None:
                return self.slow(router, identity, header, body, buffers)
            cls = type(actor.obj)
            hist = calls.inline.history(cls, method)
            if hist is not None:  # (its entry is never replaced: InlinePolicy.waited changes it in place)
                known = self.known
                if len(known) >= _KNOWN_MAX:
                    known.clear()
                known[(obj_id, method, sess)] = (4 + (sess is not None), cls, hist)
        if (actor.durable is not None or not self.servicer.accepting or calls.node is None
                or not calls.inline.allows_entry(hist)
                or (_modules.get("opentelemetry.trace") is not None and tracing.enabled())):
            return self.slow(router, identity, header, body, buffers)
        if not actor.enter_idle():  # admission as Actor.admit, for an idle actor only (nothing queued before it)
            return self.slow(router, identity, header, body, buffers)
        t0 = _monotonic()
        if sess is not None:
            self.seen[sess] = t0
        return self._run(actor, method, chain, body, router, identity, rid, t0, hist)

    def _run(self, actor: Any, method: str, chain: Any, body: Any, router: Any, identity: bytes, rid: int,
             t0: float, hist: list, head: bytes | None = None, row: Any = None) -> bool:
        """Run an admitted call and answer it: the run, the reply, then the accounting."""
        calls = self.calls
        hooks = self.hooks
        if hooks.busy:  # the previous inline call still runs on the thread that handed the loop off
            hooks = self.hooks = _Hooks(calls)
        hooks.busy = True
        hooks.actor, hooks.chain, hooks.ident, hooks.waited = actor, chain, _get_ident(), False
        obj = actor.obj
        cls = type(obj)
        # context.set_context, inlined (the scope stays None: a sync call without deadline), in this
        # thread's dict of the context (one look-up of the thread's dict, not one per attribute)
        local = _local.__dict__
        local["chain"], local["on_block"], local["on_unblock"] = chain, hooks.on_block, hooks.on_unblock
        packed = None  # the body of a plain ok reply (a str, number, bool or None: packed here)
        try:
            try:  # (call_args, inlined)
                args = _unpackb(body, raw=False, strict_map_key=False, ext_hook=_not_plain)
            except Exception:
                args = _decode(body)
            args, kwargs = args
            if head is None and method.startswith("_") and method != "__call__":  # (a template's is not: _learn)
                raise AttributeError(f"{method!r} is private: private methods are never called remotely")
            fn = getattr(obj, method)
            try:  # (runs_on_loop's own cache first: the function's entry, made at its first call)
                on_loop = _ON_LOOP[getattr(fn, "__func__", fn)]
            except (KeyError, TypeError):
                on_loop = runs_on_loop(cls, method, fn)
            if on_loop:  # shadowed by a coroutine function: the event loop runs it
                call = Call(lambda e: _answer(router, identity, rid, e), method, body, [], chain, None, False)
                call.t0 = t0
                if calls._to_loop(actor, call, fn, args, kwargs):
                    return True  # its task answers, and starts the actor's next call
                entry = shut_down()
            else:
                watchdog = calls.watchdog  # it covers the method only: this thread sends the reply after it
                watchdog.seq = seq = watchdog.seq + 1  # Watchdog.begin, inlined (the same order)
                watchdog.current = mine = (seq, hooks.ident)
                if watchdog._thread is None:
                    watchdog.start()
                try:
                    t = _monotonic()  # after begin(), which may start the watchdog's thread: not the method's time
                    value = fn(*args, **kwargs)
                    elapsed = _monotonic() - t
                finally:
                    with watchdog.lock:  # Watchdog.end(ident), inlined: never handed off once it ended
                        if watchdog.current is mine:
                            watchdog.current = None
                kind = type(value)  # (packed_plain, inlined, with the hooks' own packer)
                if kind is str or kind is float or kind is bool or value is None or (
                        kind is int and _INT_MIN <= value <= _INT_MAX):
                    try:
                        packed = hooks.pack(value)
                    except Exception:  # noqa: BLE001 - a str that does not encode: the codec's error entry
                        packed = None
                entry = _OK_ENTRY if packed is not None else ok(result_of(cls, method, value))
                if hooks.waited:
                    calls.inline.waited(cls, method)
                elif packed is None:
                    calls.inline.add(hist, elapsed)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            entry = call_error(exc)
            packed = None
            if hooks.waited:
                calls.inline.waited(cls, method)
        finally:
            local["chain"] = local["on_block"] = local["on_unblock"] = None
            hooks.busy = False
        if packed is not None and not hooks.waited:  # (then the method ran: elapsed is set)
            # The reply first, the server's own accounting after it: nothing reads that before
            # this thread goes back to the loop (it is still the I/O thread unless the watchdog
            # handed a long run off). A call that waited keeps the order below: a successor
            # thread serves requests meanwhile, and a status read must find it counted.
            router.reply_now(identity, head or _ok_header(rid), packed)
            hist[0] += 1  # InlinePolicy.add, inlined
            if elapsed > _SLOW_RUN * calls.inline.threshold:
                hist[1] = elapsed
            else:
                hist[1] += _ALPHA * (elapsed - hist[1])
            actor.served += 1
            if row is not None:
                row.ok(t0)
            else:
                calls.stats.record(actor.cls_name, method, t0, _OK)
            if not actor.leave_idle():
                calls.next(actor)
            return True
        actor.served += 1
        head = entry[0]
        calls.stats.record(actor.cls_name, method, t0, head)
        if packed is not None:
            router.reply_packed(identity, _ok_header(rid), packed)
        else:
            _answer(router, identity, rid, entry)
        calls.next(actor)
        return True


def _answer(router: Any, identity: bytes, rid: int, entry: Any) -> None:
    head = entry[0]
    if len(head) == 1 and head.get("op") == wire.OK:
        router.reply_packed(identity, _ok_header(rid), entry[1], entry[2])
    else:
        router.reply(identity, {**head, "re": rid}, entry[1], entry[2])
