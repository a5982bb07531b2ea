"""Pipelined creation: ``to_dist()`` returns before the server has answered the ``create``.

The first creation of a class on a server returns once the connection is up (the server is
reachable and accepts our secret: :func:`mesh._create_req.connected`); later creations of that
class there go out and return a proxy at once: ``[A().to_dist() for _ in range(N)]`` costs no
round trip per object.
The server registers the object when the request arrives and queues calls behind its
constructor, so nothing is reordered.

The I/O thread reads each ``create`` reply (:func:`track`); the proxy then becomes a plain
:class:`~mesh.RpcObject`. Its first use (a method, an attribute, a call, passing it on) waits
for the reply if it has not come yet, and raises the creation's error there: the same exception
type (``RemoteError`` for a constructor that raised, ``ServerUnavailable``...) with a message that
names the creation (:func:`settle`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from mesh import _create_many
from mesh._core import wire
from mesh._core.cancel import deadline_at
from mesh._errors import CallTimeout, DeadlineExceeded, MeshError, RemoteError, ServerUnavailable
from mesh.client import RpcObject
from mesh.client._replies import decode_reply, translate, wait

__all__ = ["CreatingObject", "built", "make", "pending", "settle", "shared", "track"]


class _Entry:
    __slots__ = ("fut", "error", "retry", "resend", "elsewhere", "done", "what", "lock", "handled")

    def __init__(self, fut: Any, what: str, done: Callable[[dict], None], retry: Callable[[], RpcObject],
                 elsewhere: Callable[[], RpcObject] | None) -> None:
        self.fut = fut  # the create's reply future
        self.error: BaseException | None = None
        self.retry: Callable[[], RpcObject] | None = None  # set when it must be created again, synchronously
        self.done = done
        self.what = what
        self.lock = threading.Lock()
        self.handled = False
        self.resend = retry  # the server asked for the class by value
        self.elsewhere = elsewhere  # the server is gone: placed again (by discovery)


log = logging.getLogger("mesh")
_inflight = [0]  # creations sent and not answered yet (a list: changed under _lock)
_lock = threading.Lock()


class CreatingObject(RpcObject):
    """A proxy whose ``create`` may not be answered yet (same layout as ``RpcObject``).

    Its ``_mesh_inst`` slot (the server run's id, which only the reply tells) holds the
    creation's :class:`_Entry` until then; the proxy becomes a plain ``RpcObject`` once the
    creation succeeded, and stays a ``CreatingObject`` holding the error if it failed.
    """

    __slots__ = ()

    @property  # type: ignore[override]
    def _mesh_address(self) -> str:
        """Where the object lives: known once its creation is answered (a placement by discovery
        moves it when that server turned out to be gone)."""
        settle(self, quiet=True)
        return _ADDRESS.__get__(self)

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("_"):
            settle(self)
        return RpcObject.__getattr__(self, name)

    @property
    def __call__(self) -> Any:  # type: ignore[override]
        settle(self)
        return RpcObject.__call__.fget(self)  # type: ignore[attr-defined]

    def __reduce__(self) -> tuple:
        if not settle(self):  # whoever receives it will call the object: it must exist
            raise DeadlineExceeded(f"{self._mesh_cls} on {_ADDRESS.__get__(self)} was not created "
                                   "before the deadline: it cannot be passed on yet")
        return RpcObject.__reduce__(self)


_ADDRESS = RpcObject.__dict__["_mesh_address"]  # the slot, under CreatingObject's property


def make(address: str, object_id: str, cls_name: str, methods: dict) -> CreatingObject:
    proxy = RpcObject(address, object_id, cls_name, methods)
    object.__setattr__(proxy, "__class__", CreatingObject)
    return proxy  # type: ignore[return-value]


def pending() -> int:
    """Creations sent and not answered yet."""
    return _inflight[0] + _create_many.outstanding()


def built(proxies: list, info: dict) -> None:
    """The objects of a ``create_many`` batch are built (I/O thread): each proxy becomes a plain
    ``RpcObject`` (``info``: the reply fields they share). No future or entry per object: at a
    million creations that was most of the client's work per object after sending it."""
    pool, inst = shared(info.get("pool")), shared(info.get("inst"))
    setattr_ = object.__setattr__
    for proxy in proxies:
        setattr_(proxy, "_mesh_pool", pool)
        setattr_(proxy, "_mesh_inst", inst)
        if type(proxy) is CreatingObject:
            setattr_(proxy, "__class__", RpcObject)


def track(proxy: CreatingObject, fut: Any, what: str, done: Callable[[dict], None],
          retry: Callable[[], RpcObject], elsewhere: Callable[[], RpcObject] | None = None) -> None:
    """Follow the ``create`` of ``proxy``; ``done(info)`` runs with the successful reply's value
    (on the I/O thread: it must not block). At first use, ``retry()`` re-creates it synchronously
    by value when the server asked for the class, ``elsewhere()`` on another server when that one
    was unavailable; both return the new proxy, whose place this one takes."""
    entry = _Entry(fut, what, done, retry, elsewhere)
    object.__setattr__(proxy, "_mesh_inst", entry)
    with _lock:
        _inflight[0] += 1
    fut.add_done_callback(lambda f: _handle(proxy, entry))


def _handle(proxy: RpcObject, entry: _Entry) -> None:
    """Record the answer of a completed create, once (on the I/O thread, or in :func:`settle`)."""
    with entry.lock:
        if entry.handled:
            return
        entry.handled = True
        with _lock:
            _inflight[0] -= 1
        try:
            reply = entry.fut.result()
            if reply[0].get("op") == wire.ERR and reply[0].get("kind") == wire.K_NEEDCLASS:
                entry.retry = entry.resend  # settle() sends it again, by value
                return
            info = decode_reply(reply, _ADDRESS.__get__(proxy))
            _ready(proxy, info if isinstance(info, dict) else {}, entry.done)
        except BaseException as exc:  # noqa: BLE001 - kept for the proxy's first use
            error = translate(exc)
            if entry.elsewhere is not None and type(error) is ServerUnavailable:
                entry.retry = entry.elsewhere  # never reached it (not OutcomeUnknown): place it again
            else:
                entry.error = _named(error, entry.what)
                if isinstance(error, RemoteError):  # the server refused it or its constructor raised
                    _report(entry.what, error)
            return
        finally:
            entry.fut = None


def _report(what: str, error: BaseException) -> None:
    """Log a creation the server failed, once per class and server: not lost if the proxy is never used."""
    if what in _reported or len(_reported) >= 256:
        return
    _reported.add(what)
    log.warning("%s failed: %s (the proxy raises it at its first use)", what, error)


_reported: set[str] = set()


def shared(text: Any) -> Any:
    """One string object for equal server addresses, runs and pools: a million proxies of four
    servers then hold four copies, not a million (bounded: past 4,096 distinct, as given)."""
    if type(text) is not str:
        return text
    kept = _strings.get(text)
    if kept is None:
        if len(_strings) >= 4096:
            return text
        kept = _strings.setdefault(text, text)
    return kept


_strings: dict[str, str] = {}


def _ready(proxy: RpcObject, info: dict, done: Callable[[dict], None]) -> None:
    object.__setattr__(proxy, "_mesh_pool", shared(info.get("pool")))
    object.__setattr__(proxy, "_mesh_inst", shared(info.get("inst")))
    done(info)
    if type(proxy) is CreatingObject:
        object.__setattr__(proxy, "__class__", RpcObject)  # a plain proxy from now on: no check per use


def _adopt(proxy: RpcObject, made: RpcObject) -> None:
    """``proxy`` becomes ``made`` (created again, synchronously): nothing was sent to it yet."""
    _ADDRESS.__set__(proxy, _ADDRESS.__get__(made))
    for slot in ("_mesh_id", "_mesh_pool", "_mesh_inst"):
        object.__setattr__(proxy, slot, getattr(made, slot))
    if type(proxy) is CreatingObject:
        object.__setattr__(proxy, "__class__", RpcObject)


def settle(proxy: RpcObject, *, quiet: bool = False) -> bool:
    """Wait for ``proxy``'s creation if it is still in flight; raise its error if it failed
    (``quiet``: never raise). The wait ends at the deadline of the code running here
    (``mesh.deadline()`` or the running call's): False then, the creation still in flight, and
    the call being made fails with ``DeadlineExceeded`` as any call past its deadline does.

    Raises:
        MeshError: the creation failed: the error a synchronous ``to_dist()`` would have raised,
            its message naming the creation.
    """
    entry = proxy._mesh_inst
    if type(entry) is _create_many.Waiter:  # in a create_many batch: its reply settles the proxy
        at = deadline_at()
        if not _wait_batch(entry, _ADDRESS.__get__(proxy), at):
            return False
        entry = proxy._mesh_inst
        if type(entry) is _create_many.Waiter:
            if quiet:
                return True
            raise MeshError(f"creating {proxy._mesh_cls} on {_ADDRESS.__get__(proxy)}: its batch "
                            "was answered without settling it (a bug)")
    if not isinstance(entry, _Entry):
        return True  # answered: a plain proxy (or about to become one)
    fut = entry.fut
    if fut is not None:
        at = deadline_at()
        try:
            wait(fut, at, _ADDRESS.__get__(proxy))
        except CallTimeout:
            if at is not None and not fut.done():
                return False  # the deadline came first (its answer is still recorded when it comes)
        except BaseException:  # noqa: BLE001 - _handle records it
            pass
        _handle(proxy, entry)  # the I/O thread's callback may still be running: whoever is first
    with entry.lock:
        if entry.error is None and entry.retry is not None:
            retry, entry.retry = entry.retry, None
            try:
                _adopt(proxy, retry())
            except MeshError as exc:
                entry.error = _named(exc, entry.what)
        error = entry.error
    if error is not None and not quiet:
        raise error.with_traceback(None)
    return True


def _wait_batch(waiter: Any, address: str, at: float | None = None) -> bool:
    """Wait until a batch's proxies are settled (its reply came, or it failed: the waiter is
    always completed; Ctrl-C goes through); False when the deadline ``at`` came first."""
    while not waiter.done():
        try:
            wait(waiter, at, address)
        except KeyboardInterrupt:
            raise
        except CallTimeout:
            if at is not None and not waiter.done():
                return False
        except BaseException:  # noqa: BLE001 - the waiter only ever completes with None
            pass
    return True


def _named(exc: BaseException, what: str) -> BaseException:
    """The same error, its message naming the pipelined creation it comes from."""
    note = f"{what} failed (to_dist() returned before the server answered; the error shows at first use)"
    if isinstance(exc, RemoteError):
        try:
            return type(exc)(exc.remote_type, f"{note}: {exc.remote_message}", exc.remote_traceback, exc.remote_class)
        except Exception:  # pragma: no cover - a RemoteError subclass with another signature
            pass
    elif isinstance(exc, MeshError):
        try:
            return type(exc)(f"{note}: {exc}")
        except Exception:  # pragma: no cover
            pass
    exc.add_note(note)
    return exc
