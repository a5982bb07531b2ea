"""The process's client side: one I/O node, request helpers, error translation."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import errno
import gc
import inspect
import os
import sys
import threading
import time
import types
import uuid
from concurrent.futures import Future
from typing import Any

import zmq

import transport
from mesh import _settings
from mesh._context import blocking, counted_pickles
from mesh._errors import (
    AgentNotFound,
    AuthenticationError,
    CallTimeout,
    MeshError,
    MessageTooLarge,
    OutcomeUnknown,
    RemoteError,
    ResultExpired,
    SerializationError,
    ServerUnavailable,
)

__all__ = ["Client", "get_client", "normalize_address", "raise_error", "shutdown_client", "translate"]


class Client:
    """The process-wide node plus what the client knows of its peers."""

    def __init__(self, settings: _settings.Settings) -> None:
        self.settings = settings
        self.keys = transport.derive_keys(settings.secret) if settings.secret else None
        self.node = transport.Node(
            keys=self.keys,
            heartbeat_ivl=max(0.1, settings.heartbeat_timeout / 3),
            heartbeat_timeout=settings.heartbeat_timeout,
            connect_timeout=settings.connect_timeout,
            window=settings.max_inflight,
        )
        self.node.window_wait_hook = blocking  # a worker waiting for the window frees its slot
        self.session = uuid.uuid4().hex
        self.pid = os.getpid()
        self.limits: dict[str, int] = {}  # address -> server's max message size
        self.owned: dict[str, list[float]] = {}  # server -> [renew every, last renewal] (leases)
        # (address, item) released handles; a deque, not a lock: __del__ may run in any thread at
        # any moment (the garbage collector), even in a thread that is flushing
        self._releases: collections.deque[tuple[str, Any]] = collections.deque()
        self.inflight: dict[str, int] = {}  # object id -> async calls not yet answered
        self.node.add_timer(0.25, self._renew_leases)
        self.node.add_timer(0.5, self._flush_releases)

    def own(self, address: str, lease_ttl: float | None = None) -> None:
        """Keep a lease on ``address``: objects created there live while this process does."""
        every = LEASE_INTERVAL if not lease_ttl else min(LEASE_INTERVAL, lease_ttl / 4)
        lease = self.owned.get(address)
        if lease is None:
            self.owned[address] = [every, time.monotonic()]
        else:
            lease[0] = min(lease[0], every)

    def _renew_leases(self) -> None:
        now = time.monotonic()
        for address, lease in list(self.owned.items()):
            if now - lease[1] >= lease[0]:
                lease[1] = now
                # on the control connection: a lease never queues behind calls
                self.node.send(address, {"op": "lease", "sess": self.session}, control=True)

    def release(self, address: str, task: str | list, *, now: bool = False) -> None:
        """A handle on a result is gone: ``task`` (the caller's, never shared) or ``[task, ref, children]``.

        Releases go out in batches; ``now`` sends at once (a large value: free its memory soon).
        """
        self._releases.append((address, task))
        if now or len(self._releases) >= 256:
            self._flush_releases()

    def _flush_releases(self) -> None:
        releases: dict[str, list] = {}
        queue = self._releases
        while True:
            try:
                address, item = queue.popleft()
            except IndexError:
                break
            releases.setdefault(address, []).append(item)
        for address, tasks in releases.items():
            self.node.send(address, {"op": "release", "tasks": tasks, "sess": self.session})

    def request(self, address: str, header: dict, value: Any, *, timeout: float | None = None) -> Future:
        """Encode and send a request; returns the transport future.

        Raises:
            MessageTooLarge: the encoded request exceeds the server's limit.
            MeshError: the value cannot be encoded.
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

    def _prepare(self, address: str, header: dict, value: Any) -> tuple[bytes, list]:
        # call arguments are decoded exactly once by the server: futures in them become counted holders
        counted = counted_pickles() if header.get("op") in _COUNTED_OPS else contextlib.nullcontext([])
        try:
            with counted as made:
                try:
                    body, buffers = transport.encode(value)
                except BaseException:
                    _take_back(made)
                    raise
        except transport.CodecError as exc:
            raise cannot_send(header, value, exc) from exc
        limit = self.limits.get(address, self.settings.max_message_size)
        if buffers or len(body) > 65536:
            size = len(body) + sum(memoryview(b).nbytes for b in buffers)
            biggest = max([len(body), *(memoryview(b).nbytes for b in buffers)])
            if limit > 0 and biggest > limit:
                _take_back(made)
                raise MessageTooLarge(
                    f"message of {size} bytes exceeds the limit of {limit} bytes of {address} "
                    "(server flag --max-message-size)"
                )
        header["id"] = self.node.next_id()
        header.setdefault("sess", self.session)
        return body, buffers

    def close(self) -> None:
        from mesh._future import release_lenders  # (results) copies passed on keep their results

        release_lenders(self)
        self._flush_releases()
        for address in list(self.owned):  # our objects can go now
            self.node.send(address, {"op": "bye", "sess": self.session})
        self.node.close()


_COUNTED_OPS = ("call", "create")


def cannot_send(header: dict, value: Any, exc: transport.CodecError) -> SerializationError:
    """The error for a request whose arguments cannot be encoded, naming the argument at fault.

    ``argument 'f' of WebAgent(...): an open file (_io.TextIOWrapper) cannot travel to another process``
    """
    op = header.get("op")
    cls_ref = header.get("cls") if op == "create" else None
    if op == "create" and isinstance(value, dict):
        where = f"{str(cls_ref).rpartition(':')[2]}(...)"
        args, kwargs = value.get("args", ()), value.get("kwargs", {})
    elif op == "call" and isinstance(value, list) and len(value) == 2:
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


def _take_back(made: list) -> None:
    """Arguments that will not be sent: the borrowers pickled into them will never exist."""
    for holder, ref in made:
        children = holder.__dict__.get("_mesh_children")
        if children is not None and ref in children:
            children.remove(ref)


LEASE_INTERVAL = 5.0  # seconds between lease renewals; servers expire a lease after lease_ttl (30 s)

_lock = threading.Lock()
_client: Client | None = None


def get_client() -> Client:
    """The process's client, created on first use (and anew after a fork)."""
    global _client
    c = _client
    if c is not None and c.pid == os.getpid() and not c.node._closed:
        return c
    with _lock:
        if _client is None or _client.pid != os.getpid() or _client.node._closed:
            _client = Client(_settings.current())
        return _client


def shutdown_client() -> None:
    global _client
    with _lock:
        c, _client = _client, None
    if c is not None and c.pid == os.getpid():
        c.close()


def normalize_address(host: str | None, port: int | str | None = None) -> str:
    """``tcp://host:port`` from ``host`` + ``port``, ``"host:port"`` or ``"tcp://host:port"``.

    Raises:
        ValueError: the address is incomplete or malformed.
    """
    if host is None:
        raise ValueError("no host given")
    text = str(host).strip()
    if text.startswith("tcp://"):
        text = text[6:]
    if port is None:
        if text.startswith("["):
            h, _, p = text[1:].partition("]:")
        else:
            h, _, p = text.rpartition(":")
        if not h or not p:
            raise ValueError(f"address {host!r} has no port: use 'host:port' or pass port=")
        text, port = h, p
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise ValueError(f"port {port!r} is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range")
    if text in ("localhost", ""):
        text = "127.0.0.1"
    if ":" in text and not text.startswith("["):
        text = f"[{text}]"
    return f"tcp://{text}:{port}"


def translate(exc: BaseException) -> BaseException:
    """Map a transport failure onto the mesh's errors."""
    if isinstance(exc, MeshError):
        return exc
    if isinstance(exc, transport.PeerAuthFailed):
        return AuthenticationError(str(exc))
    if isinstance(exc, transport.RequestTimeout):
        return CallTimeout(str(exc))
    if isinstance(exc, transport.PeerLost):
        return OutcomeUnknown(str(exc))
    if isinstance(exc, transport.PeerUnavailable):
        return ServerUnavailable(str(exc))
    if isinstance(exc, transport.NodeClosed):
        return ServerUnavailable("the mesh client was shut down (mesh.shutdown())")
    if isinstance(exc, transport.CodecError):
        return MeshError(f"cannot decode the reply: {exc}")
    if isinstance(exc, (zmq.ZMQError, transport.TransportError)):
        return _resource_error(exc)
    return exc


def _resource_error(exc: BaseException) -> MeshError:
    """A socket error reaching the user (e.g. EMFILE): a MeshError that says which limit was hit."""
    code = getattr(exc, "errno", None)
    if code == errno.EMFILE or "Too many open files" in str(exc):
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return MeshError(
            f"this process hit its limit of open files ({soft}, ulimit -n; each server connection uses a few): {exc}"
        )
    if isinstance(exc, transport.TransportError):
        return ServerUnavailable(str(exc))
    return MeshError(f"{type(exc).__name__}: {exc}")


_KINDS: dict[str, type[MeshError]] = {
    "notfound": AgentNotFound,
    "expired": ResultExpired,
    "toolarge": MessageTooLarge,
    "unavailable": ServerUnavailable,
    "auth": AuthenticationError,
}


def raise_error(header: dict, address: str) -> None:
    """Raise the error that an ``err`` reply describes."""
    kind = header.get("kind", "remote")
    msg = str(header.get("msg", ""))
    if kind == "remote":
        raise RemoteError(str(header.get("type", "Exception")), msg, str(header.get("tb", "")))
    cls = _KINDS.get(kind)
    if cls is not None:
        raise cls(f"{address}: {msg}")
    raise MeshError(f"{address}: {kind}: {msg}")


def decode_reply(reply: tuple, address: str) -> Any:
    """Value of an ``ok`` reply, or raise the error of an ``err`` reply."""
    header, body, buffers = reply
    if header.get("op") == "err":
        raise_error(header, address)
    try:
        return transport.decode(body, buffers)
    except transport.CodecError as exc:
        raise MeshError(f"cannot decode the reply from {address}: {exc}") from exc


def wait(fut: Future, deadline: float | None, address: str) -> tuple:
    """Wait for a transport future (telling the server we block), translating errors.

    Raises:
        CallTimeout: ``deadline`` (monotonic) passed first.
        MeshError: the transport failure, translated.
    """
    if not fut.done():
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        with blocking():
            try:
                return fut.result(remaining)
            except (concurrent.futures.TimeoutError, transport.FutureTimeout):
                raise CallTimeout(
                    f"no result from {address} within the timeout "
                    "(the task may still be running; ask again to keep waiting)"
                ) from None
            except BaseException as exc:
                raise translate(exc) from None
    try:
        return fut.result()
    except BaseException as exc:
        raise translate(exc) from None
