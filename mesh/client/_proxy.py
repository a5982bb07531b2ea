"""``RpcObject``: the caller's handle to an object living on an agent server."""

from __future__ import annotations

import sys
import types
from typing import Any

import transport
from mesh._core import context, ids, tracing, wire
from mesh._core.address import normalize_address
from mesh._core.cancel import _user_deadline, outgoing
from mesh._core.context import current_chain
from mesh._core.methods import ASYNC, ASYNC_MSG, STREAM, STREAM_MSG, SYNC
from mesh._errors import DeadlineExceeded, RemoteAttributeError, RemoteError, SerializationError
import mesh.client._hubs as _hubs
from mesh.client._held import held as _held, release as _release_held
from mesh.client._cancel import stamp, sync_call, track
from mesh.client._restart import call as durable_call, failed as durable_failed, prepare as durable_prepare
from mesh.client._on_loop import busy as loop_busy, call_in_order, issue as loop_issue
from mesh.client._aio_fast import issue as aio_issue
from mesh.client._async_lane import issue as lane_issue
import mesh.client._client as _clients
from mesh.client._client import SLOW, get_client
from mesh.client._future import AsyncResult, Placeholder
from mesh.client._stream import Stream, StreamingPlaceholder

__all__ = ["RpcObject"]

_modules = sys.modules


class RpcObject:
    """Proxy of a remote object.

    Calling a sync method blocks and returns its value; an async method
    returns an :class:`~mesh.AsyncResult` (or, for an agent's ``reply`` and
    ``__call__``, a :class:`~mesh.Placeholder`) at once. Reading a public
    attribute returns the remote value. Names starting with ``_`` are never
    forwarded. A proxy can be passed to other remote objects: they then call
    the same actor.
    """

    __slots__ = ("_mesh_address", "_mesh_id", "_mesh_cls", "_mesh_methods", "_mesh_pool", "_mesh_inst", "_mesh_durable")

    def __init__(
        self, address: str, object_id: str, cls_name: str, methods: dict[str, str], pool: str | None = None,
        inst: str | None = None, durable: dict | None = None,
    ) -> None:
        # a durable object's store, max_restarts and generation (mesh.client._restart); None: not durable
        object.__setattr__(self, "_mesh_durable", dict(durable) if durable else None)
        object.__setattr__(self, "_mesh_pool", pool)
        object.__setattr__(self, "_mesh_inst", inst)  # the server's run that holds the object
        object.__setattr__(self, "_mesh_address", address)
        object.__setattr__(self, "_mesh_id", object_id)
        object.__setattr__(self, "_mesh_cls", cls_name)
        object.__setattr__(self, "_mesh_methods", methods)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(
                f"{name!r} is private: names starting with '_' are not forwarded to the remote "
                f"{self._mesh_cls} object"
            )
        mode = self._mesh_methods.get(name)
        if mode is None:
            try:
                return self._mesh_request({"op": wire.GETATTR, "obj": self._mesh_id, "m": name}, None)
            except RemoteError as exc:
                if exc.remote_type != "AttributeError":
                    raise
                raise RemoteAttributeError(exc.remote_type, exc.remote_message, exc.remote_traceback) from None
        if name not in _named and len(_named) < _NAMED_MAX and not hasattr(RpcObject, name):
            _named.add(name)  # the next look-up of this name finds it on the class (see _Named)
            setattr(RpcObject, name, _Named(name))
        return _Method(self, name, mode)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"cannot set {name!r} on a remote {self._mesh_cls}: attributes of a remote object "
            "are read-only through its proxy; call one of its methods instead"
        )

    @property
    def __call__(self) -> Any:  # a property: proxy(x) as before, and proxy.__call__.remote(x) like any method
        mode = self._mesh_methods.get("__call__")
        if mode is None:
            raise TypeError(f"remote {self._mesh_cls} object is not callable")
        if _hubs.speakers:  # inside a msghub's with: its reply is shown to the others
            k = ("remote", self._mesh_id)  # (mesh.client._hubs.key of a proxy)
            hubs = _hubs.speakers.get(k)
            if hubs is not None and k not in _hubs.speaking():
                return _hubs.HubCall(self, _Method(self, "__call__", mode), hubs)
        return _Method(self, "__call__", mode)

    def to_dist(self, host: str | None = None, port: int | str | None = None, **options: Any) -> RpcObject:
        """Already distributed: returns itself.

        Raises:
            ValueError: another server is asked for (a remote object does not move).
        """
        if host is not None or port is not None:
            wanted = normalize_address(host if host is not None else "127.0.0.1", port)
            if wanted != self._mesh_address:
                raise ValueError(
                    f"this {self._mesh_cls} already lives on {self._mesh_address}; a remote object does not "
                    f"move to {wanted}: create a new one there (Cls(..., to_dist={{'host': ..., 'port': ...}}))"
                )
        return self

    def _mesh_request(self, header: dict, value: Any) -> Any:
        if self._mesh_durable is not None:  # follows the object when it is restarted elsewhere
            return durable_call(self, lambda: self._mesh_send(header, value))
        return self._mesh_send(header, value)

    def _mesh_send(self, header: dict, value: Any) -> Any:
        client = get_client()
        return call_in_order(client, self._mesh_id, self._mesh_address, header, value, client.settings.call_timeout)

    def __reduce__(self) -> tuple:
        return (
            RpcObject,
            (self._mesh_address, self._mesh_id, self._mesh_cls, self._mesh_methods, self._mesh_pool, self._mesh_inst,
             self._mesh_durable),
        )

    def __repr__(self) -> str:
        return f"<RpcObject {self._mesh_cls} id={self._mesh_id} at {self._mesh_address}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RpcObject):
            return NotImplemented
        if self._mesh_durable is not None or other._mesh_durable is not None:  # one object, wherever it moved
            return self._mesh_id == other._mesh_id
        return (self._mesh_address, self._mesh_id) == (other._mesh_address, other._mesh_id)

    def __hash__(self) -> int:
        return hash(self._mesh_id)


class _Method:
    __slots__ = ("_proxy", "_name", "_mode")

    def __init__(self, proxy: RpcObject, name: str, mode: str) -> None:
        self._proxy = proxy
        self._name = name
        self._mode = mode

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _invoke(self._proxy, self._name, self._mode, args, kwargs)

    def remote(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send the call and return its future at once, whatever the method's mode.

        An :class:`~mesh.AsyncResult` (a :class:`~mesh.Placeholder` for an agent's ``reply``):
        ``await proxy.method.remote(x)`` never blocks the loop, even for a sync method. Calls
        of one caller to one object still run in the order they were made.
        """
        return _invoke(self._proxy, self._name, ASYNC if self._mode == SYNC else self._mode, args, kwargs)

    def __repr__(self) -> str:
        return f"<remote {self._mode} method {self._name} of {self._proxy!r}>"


class _Named:
    """A method name already looked up on some proxy, found on the class next time: on CPython
    3.11 a name that the instance and its class lack costs an ``AttributeError`` made and
    cleared before ``__getattr__`` runs (1–1.5 µs of a ~10 µs async call, measured). A proxy whose
    methods lack the name (a remote attribute of another class), or a ``CreatingObject``, goes on
    to ``__getattr__`` as before (the ``AttributeError`` raised here is what the look-up raised)."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __get__(self, proxy: Any, owner: Any = None) -> Any:
        if proxy is None:
            return self
        name = self._name
        if type(proxy) is RpcObject:
            mode = proxy._mesh_methods.get(name)
            if mode is not None:
                return _Method(proxy, name, mode)
        raise AttributeError(name)  # (then RpcObject.__getattr__, or the subclass's, decides)


_NAMED_MAX = 4096  # method names put on the class (past it: __getattr__ alone, as before)
_named: set[str] = set()


def _invoke(proxy: RpcObject, name: str, mode: str, args: tuple, kwargs: dict) -> Any:
    if _held and proxy._mesh_address in _held:  # creations held for that server go first (program order)
        _release_held(proxy._mesh_address)
    if proxy._mesh_durable is None:
        if mode == SYNC:
            value = _sync_fast(proxy, name, args, kwargs)
            if value is not SLOW:
                return value
        elif mode == ASYNC or mode == ASYNC_MSG:
            value = lane_issue(proxy, name, _FUTURES[mode], args, kwargs)  # from a thread: the async lane
            if value is not SLOW:
                return value
            value = aio_issue(proxy, name, _FUTURES[mode], args, kwargs)  # on a running loop: the await fast lane
            if value is not SLOW:
                return value
    _refuse_awaitables(proxy, name, args, kwargs)
    header = {
        "op": wire.CALL,
        "obj": proxy._mesh_id,
        "m": name,
        "chain": current_chain() or ids.new_chain(),
    }
    # scope: inside a server's running call, this call is one of its children; at: the deadline
    # of mesh.deadline() or of the running call
    scope, at = outgoing()
    scoped = scope is not None or at is not None
    if scoped:
        try:
            stamp(header, at)
        except DeadlineExceeded as exc:  # never sent; an async or stream call still gives a future, which raises it
            if mode != SYNC:
                return _never_sent(proxy, _FUTURES[mode], exc)
            raise
    span = tracing.client_span(header, proxy._mesh_cls, name, proxy._mesh_address) if tracing.enabled() else None
    if mode == ASYNC or mode == ASYNC_MSG or mode == STREAM or mode == STREAM_MSG:
        task = ids.new_chain()
        header["task"] = task
        header["keep"] = 1
        if mode == STREAM or mode == STREAM_MSG:
            header["stream"] = 1  # its items are kept for readers (see mesh.client._stream)
        client = get_client()
        object_id = proxy._mesh_id
        if proxy._mesh_durable is not None:
            durable_prepare(proxy)
        address = proxy._mesh_address
        try:  # on a running loop: on the loop's own socket (mesh.client._on_loop)
            fut = loop_issue(client, object_id, address, header, [list(args), kwargs],
                                scope is None and proxy._mesh_durable is None and mode in _LANE_MODES)
        except BaseException as exc:
            if span is not None:
                span.fail(exc)
            raise
        if span is not None:
            span.end_on(fut)
        if proxy._mesh_durable is not None:
            fut.add_done_callback(lambda f: _lost(proxy, address, f))
        client.own(address)  # our lease there keeps the result held until we release it (or exit)
        cls = _FUTURES[mode]
        future = cls(proxy._mesh_address, task, fut, pool=proxy._mesh_pool, inst=proxy._mesh_inst)
        if scoped:
            track(future, fut, scope, at, address, task)
        return future
    if scoped:
        if span is not None:
            return span.run(sync_call, proxy, header, [list(args), kwargs], scope, at)
        return sync_call(proxy, header, [list(args), kwargs], scope, at)
    if span is not None:
        return span.run(proxy._mesh_request, header, [list(args), kwargs])
    return proxy._mesh_request(header, [list(args), kwargs])


def _never_sent(proxy: RpcObject, cls: type, exc: DeadlineExceeded) -> Any:
    """The future of an async call whose deadline passed before it was sent: it fails with ``exc``."""
    future = cls(proxy._mesh_address, ids.new_chain(), None, pool=proxy._mesh_pool, inst=proxy._mesh_inst)
    future.__dict__["_mesh_exc"] = exc  # no task on the server: nothing to fetch, release or cancel
    return future


def _sync_fast(proxy: RpcObject, name: str, args: tuple, kwargs: dict) -> Any:
    """A plain sync call from code that runs for no call (no chain, scope or blocking hooks on this
    thread), with no deadline, no tracing and nothing of ours in flight to the object: the fast
    lane (:meth:`~mesh.client._client.Client.sync_call`). :data:`SLOW` for anything else."""
    local = context._local.__dict__  # this thread's (one look-up; empty on a thread that set nothing:
    if ((local and (local.get("chain") is not None or local.get("scope") is not None  # the class defaults, None)
                    or local.get("on_block") is not None))
            or _user_deadline.get() is not None  # outgoing()'s deadline, with no scope
            or (_modules.get("opentelemetry.trace") is not None and tracing.enabled())):
        return SLOW
    client = _clients._client  # (get_client, inlined for a live client)
    if client is None or not client.live():
        client = get_client()
    object_id = proxy._mesh_id
    if (loop_busy and object_id in loop_busy) or client.peers.busy(object_id):  # in flight to it (on a loop's lane: _on_loop)
        return SLOW
    return client.sync_call(proxy._mesh_address, object_id, name, context.reading_chain.get() or ids.new_chain(),
                            args, kwargs)



_LANE_MODES = (ASYNC, ASYNC_MSG)
_FUTURES: dict[str, type] = {ASYNC: AsyncResult, ASYNC_MSG: Placeholder, STREAM: Stream, STREAM_MSG: StreamingPlaceholder}


def _lost(proxy: RpcObject, address: str, fut: Any) -> None:
    """An async call of a durable object failed as if its server were gone: the next call recovers."""
    exc = fut.exception()
    if exc is None:
        header = fut.result()[0]
        if header.get("op") == wire.ERR and header.get("kind") in (wire.K_NOTFOUND, wire.K_UNAVAILABLE):
            durable_failed(proxy, address)
    elif isinstance(exc, transport.PeerUnavailable):  # PeerLost too
        durable_failed(proxy, address)


def _refuse_awaitables(proxy: RpcObject, name: str, args: tuple, kwargs: dict) -> None:
    """A coroutine or an asyncio future as an argument is a value not yet made: say so at call time.

    (Mesh futures are awaitable too, but they travel: the server reads them itself.)
    """
    aio = sys.modules.get("asyncio")
    fut = aio.Future if aio is not None else ()
    coro = types.CoroutineType
    if not any(type(a) is coro or isinstance(a, fut) for a in args) and not (
            kwargs and any(type(v) is coro or isinstance(v, fut) for v in kwargs.values())):
        return  # the common case, checked without naming each argument (this runs on every call)
    for label, arg in [*((str(i + 1), a) for i, a in enumerate(args)), *((repr(k), v) for k, v in kwargs.items())]:
        kind = type(arg)
        if kind is types.CoroutineType:
            what = "a coroutine"
        elif aio is not None and isinstance(arg, aio.Future):
            what = "an asyncio task" if isinstance(arg, aio.Task) else "an asyncio future"
        else:
            continue
        raise SerializationError(
            f"argument {label} of {proxy._mesh_cls}.{name}(...) is {what}, not a value: await it first "
            "(a mesh future may be passed as it is)"
        )
