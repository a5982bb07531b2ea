"""The process's client: encode a request (counting the futures in its arguments, checking the
server's size limit), send it (``request`` on the I/O thread, ``call`` on the calling thread's
own socket), keep leases on the servers where this process owns objects, and send releases.

The Node, the session and the settings come from the process's runtime (``mesh._core.runtime``),
which an in-process server shares.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import os
import sys
import threading
import time
import types
from concurrent.futures import Future
from typing import Any

import msgpack

import transport
from mesh._core import runtime, wire
from mesh._core.context import blocking
from mesh._core.settings import Settings
from mesh._errors import MessageTooLarge, SerializationError
from mesh.client._holders import ReleaseQueue, activate, counted_pickles, deactivate, release_lenders, take_back
from mesh.client._peers import PeerBook
from mesh.client._replies import decode_reply, translate

__all__ = ["SLOW", "Client", "cannot_send", "get_client", "shutdown_client"]

SLOW: Any = object()  # Client.sync_call: this call is not for the fast lane (take the general path)
_TEMPLATES_MAX = 4096  # request header templates kept, per (object, method)
_unpackb = msgpack.unpackb
_pack_uint, _pack_str, _pack_plain = transport.pack_uint, transport.pack_str, transport.pack_plain
_OK_RE = transport.ok_header(0)[:-1]  # an ok reply's header up to the value of "re"
_SIGNATURE = transport.SIGNATURE
_STR_HEADS = [bytes((0xA0 | n,)) for n in range(32)]  # msgpack fixstr headers
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_SCALARS = frozenset((str, float, bool, type(None)))
_runtime_pid = runtime._pid  # this process's pid, kept across forks (mesh._core.runtime)


class Client:
    """The caller's side of the process: requests, leases and releases over the runtime's Node."""

    def __init__(self, rt: runtime.Runtime) -> None:
        self.runtime = rt
        self.node = rt.node
        self.session = rt.session
        self.peers = PeerBook()
        self.peers.node = self.node
        self.releases = ReleaseQueue(self._send_releases, rt.live)
        self.node.add_timer(0.25, self._renew_leases)
        self.node.add_timer(0.5, self.releases.flush)
        self._templates: dict[tuple[str, str], bytes] = {}  # (object, method) -> request header prefix

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    def live(self) -> bool:
        rt = self.runtime  # (Runtime.live, inlined: get_client asks on every call)
        return rt.pid == _runtime_pid[0] and not rt.node.closed and not self.releases.closed

    def own(self, address: str, lease_ttl: float | None = None) -> None:
        """Keep a lease on ``address``: objects created there live while this process does."""
        self.peers.own(address, lease_ttl)

    def _renew_leases(self, now: float | None = None) -> None:
        for address in self.peers.leases_due(time.monotonic() if now is None else now):
            # on the control connection: a lease never queues behind calls
            self.node.send(address, {"op": wire.LEASE, "sess": self.session}, control=True)

    def _send_releases(self, address: str, items: list) -> None:
        self.node.send(address, {"op": wire.RELEASE, "tasks": items, "sess": self.session})

    def flush_releases(self) -> None:
        self.releases.flush()

    def request(self, address: str, header: dict, value: Any, *, timeout: float | None = None) -> Future:
        """Encode and send a request; returns the transport future.

        Raises:
            MessageTooLarge: the encoded request exceeds the server's limit.
            SerializationError: the value cannot be encoded.
        """
        body, buffers = self._prepare(address, header, value)
        return self.node.request(address, header, body, buffers, timeout=timeout)

    def call(self, address: str, header: dict, value: Any, *, timeout: float | None = None) -> Any:
        """Send a request and wait for the reply on this thread's own socket; the decoded value.

        Raises:
            MeshError: as :meth:`request`, plus the reply's error.
        """
        body, buffers = self._prepare(address, header, value)
        try:
            with blocking():
                reply = self.node.call(address, header, body, buffers, timeout=timeout)
        except BaseException as exc:
            raise translate(exc) from None
        return decode_reply(reply, address)

    def sync_call(self, address: str, object_id: str, method: str, chain: str, args: tuple, kwargs: dict) -> Any:
        """The fast lane of a plain sync call on this thread's own socket: the decoded value, or
        :data:`SLOW` when the call needs the general path (:meth:`call`).

        The caller checked what the general path would add: no deadline or cancel scope, no
        tracing, no ``blocking()`` hooks, no async call in flight to the object, not durable.
        Here: arguments of plain values only (str, int, float, bool, None, small bytes, and
        str-keyed kwargs of those), so that nothing is pickled (no counted futures) and the body
        is what :func:`transport.encode` makes of them. The header is a template per object and
        method (:func:`transport.map_prefix`) plus the chain and the id; an ``ok`` reply is
        recognised by its packed header, and a plain value is unpacked without the codec.
        """
        body = _plain_body(args, kwargs)
        if body is None or len(body) > self.peers.lean_max:  # (a big one: the size check of _prepare)
            return SLOW
        key = (object_id, method)
        prefix = self._templates.get(key)
        if prefix is None:
            if len(self._templates) >= _TEMPLATES_MAX:
                self._templates.clear()
            prefix = self._templates[key] = transport.map_prefix(
                6, [("op", wire.CALL), ("obj", object_id), ("m", method), ("sess", self.session)]) + b"\xa5chain"
        node = self.node
        rid = node.next_id()
        if 256 <= rid < 65536:  # (pack_uint, inlined for ids 256 .. 2**32 - 1)
            packed = (0xCD0000 | rid).to_bytes(3, "big")
        elif 65536 <= rid < 4294967296:
            packed = (0xCE00000000 | rid).to_bytes(5, "big")
        else:
            packed = _pack_uint(rid)
        raw = chain.encode()  # (pack_str, inlined for the short ids chains are)
        frames = [_SIGNATURE, prefix + (_STR_HEADS[len(raw)] + raw if len(raw) < 32 else _pack_str(chain))
                  + b"\xa2id" + packed, body]
        try:
            reply = node.call_fast(address, rid, frames, _OK_RE + packed, self.runtime.settings.call_timeout)
        except BaseException as exc:
            raise translate(exc) from None
        if reply is None:  # on the I/O thread, or closed: the general path says what to do
            return SLOW
        if type(reply) is tuple:  # not a plain ok: an error, or another server's header
            return decode_reply(reply, address)
        try:
            return _unpackb(reply, raw=False, strict_map_key=False, ext_hook=_not_plain)
        except Exception:  # an ext value (a tuple, a pickle...) or a malformed body: the codec decides
            return decode_reply(({"op": wire.OK}, reply, []), address)

    def _prepare(self, address: str, header: dict, value: Any) -> tuple[bytes, list]:
        # call arguments are decoded exactly once by the server: futures in them become counted holders
        counted = counted_pickles() if header.get("op") in _COUNTED_OPS else contextlib.nullcontext([])
        try:
            with counted as made:
                try:
                    body, buffers = transport.encode(value)
                except BaseException:
                    take_back(made)
                    raise
        except transport.CodecError as exc:
            raise cannot_send(header, value, exc) from exc
        limit = self.peers.limit(address, self.settings.max_message_size)
        if buffers or len(body) > 65536 or 0 < limit < len(body):  # (a server's limit can be under 64 KiB)
            size = len(body) + sum(memoryview(b).nbytes for b in buffers)
            biggest = max([len(body), *(memoryview(b).nbytes for b in buffers)])
            if limit > 0 and biggest > limit:
                take_back(made)
                raise MessageTooLarge(
                    f"message of {size} bytes exceeds the limit of {limit} bytes of {address} "
                    "(server flag --max-message-size)"
                )
        header["id"] = self.node.next_id()
        header.setdefault("sess", self.session)
        return body, buffers

    def close(self) -> None:
        """The session ends: copies passed on keep their results, the rest goes with a ``bye``."""
        deactivate(self.releases)
        release_lenders(self.releases)
        self.releases.flush()
        self.releases.closed = True
        for address in self.peers.leased():  # our objects can go now
            self.node.send(address, {"op": wire.BYE, "sess": self.session})


_COUNTED_OPS = (wire.CALL, wire.CREATE)


def _plain(v: Any) -> bool:
    t = type(v)
    return t in _SCALARS or (t is int and _INT_MIN <= v <= _INT_MAX) or (t is bytes and len(v) < transport.BUFFER_THRESHOLD)


def _plain_body(args: tuple, kwargs: dict) -> bytes | None:
    """The body of ``[args, kwargs]`` when every argument is a plain value (else None): the bytes
    :func:`transport.encode` makes of them, without walking them for pickles and buffers."""
    for a in args:
        if type(a) not in _SCALARS and not _plain(a):
            return None
    if kwargs:
        for k, v in kwargs.items():
            if type(k) is not str or not _plain(v):
                return None
    try:  # (a tuple packs as the list the codec makes of it)
        return _pack_plain((args, kwargs))
    except Exception:  # e.g. a str that is not valid UTF-8 (a lone surrogate): the codec says what
        return None




def _not_plain(code: int, data: bytes) -> Any:
    raise ValueError("an ext value: decoded by the codec")


def cannot_send(header: dict, value: Any, exc: transport.CodecError) -> SerializationError:
    """The error for a request whose arguments cannot be encoded, naming the argument at fault.

    ``argument 'f' of WebAgent(...): an open file (_io.TextIOWrapper) cannot travel to another process``
    """
    op = header.get("op")
    cls_ref = header.get("cls") if op == wire.CREATE else None
    if op == wire.CREATE and isinstance(value, dict):
        where = f"{str(cls_ref).rpartition(':')[2]}(...)"
        args, kwargs = value.get("args", ()), value.get("kwargs", {})
    elif op == wire.CALL and isinstance(value, list) and len(value) == 2:
        where = f"{header.get('m')}(...)"
        args, kwargs = value
    else:
        return SerializationError(f"cannot send {op}: {exc}")
    culprit = getattr(exc, "obj", None)
    if culprit is not None:
        names = _parameter_names(cls_ref, len(args))
        candidates = [(names[i], a) for i, a in enumerate(args)] + [(repr(k), v) for k, v in kwargs.items()]
        for label, arg in candidates:
            if _holds(arg, culprit):
                return SerializationError(f"argument {label} of {where}: {exc}")
    return SerializationError(f"cannot send the arguments of {where}: {exc}")


def _parameter_names(cls_ref: Any, count: int) -> list[str]:
    """Names of the first ``count`` positional parameters of a class's constructor (``'1'``... if unknown)."""
    names = [str(i + 1) for i in range(count)]
    if not isinstance(cls_ref, str) or not count:
        return names
    module, _, qualname = cls_ref.partition(":")
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    try:  # the constructor's own signature: RpcMeta.__call__ hides it behind (*args, **kwargs)
        params = list(inspect.signature(obj.__init__).parameters.values())[1:] if isinstance(obj, type) else []
    except (TypeError, ValueError):
        return names
    for i, p in enumerate(params[:count]):
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            names[i] = repr(p.name)
        elif p.kind == p.VAR_POSITIONAL:
            break
    return names


def _holds(root: Any, target: Any, limit: int = 100_000) -> bool:
    """Whether ``target`` is reachable from ``root`` through containers and instance attributes."""
    seen = {id(root)}
    todo = [root]
    while todo and len(seen) < limit:
        obj = todo.pop()
        if obj is target:
            return True
        for ref in gc.get_referents(obj):
            if id(ref) not in seen and not isinstance(ref, (type, types.ModuleType)):
                seen.add(id(ref))
                todo.append(ref)
    return False



_lock = threading.Lock()
_client: Client | None = None


def get_client() -> Client:
    """The process's client, made on first use (and anew after a fork or ``mesh.shutdown()``)."""
    global _client
    c = _client
    if c is not None and c.live():
        return c
    with _lock:
        if _client is None or not _client.live():
            rt = runtime.current()
            rt.client_closed = False  # a client again: the runtime stays when its servers stop
            _client = Client(rt)
            activate(_client.releases)
        return _client


def shutdown_client() -> None:
    """End the client's session (releases, ``bye``); the runtime's Node is closed by its owner."""
    global _client
    with _lock:
        c, _client = _client, None
    if c is not None and c.runtime.pid == os.getpid() and not c.runtime.closed:
        c.close()
