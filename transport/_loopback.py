"""An in-process stand-in for :class:`~transport.Node`: requests go to registered handlers, no sockets.

A test seam (like httpx's ``MockTransport``): code written against a node's
``request`` / ``call`` / ``send`` / ``add_router`` can run against a
:class:`Loopback` instead, with the same handler signature and the same
failures, in microseconds and without a network namespace::

    lb = Loopback()
    router = lb.add_router("127.0.0.1", 0, lambda r, ident, h, body, bufs: r.reply(ident, {"op": "ok", "re": h["id"]}))
    header, body, buffers = lb.call(router.endpoint, {"op": "ping", "id": lb.next_id()}, b"\\xc0")

Handlers run on the caller's thread (a real node runs them on its I/O thread);
a reply may come at once or later from any thread. Frames are passed as they
are: nothing is framed, encoded or copied.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any, Callable

from transport._errors import FutureTimeout, NodeClosed, PeerUnavailable, RequestTimeout
from transport._future import ReplyFuture

__all__ = ["Loopback", "LoopbackRouter"]

Handler = Callable[["LoopbackRouter", bytes, dict, Any, list], None]


class LoopbackRouter:
    """A registered handler at ``endpoint``; :meth:`reply` answers the request from ``identity``."""

    def __init__(self, lb: Loopback, handler: Handler, port: int, host: str) -> None:
        self._lb = lb
        self.handler = handler
        self.port = port
        self.endpoint = f"tcp://{host}:{port}"

    def reply(self, identity: bytes, header: dict, body: bytes = b"\xc0", buffers: list | tuple = ()) -> None:
        self._lb._deliver(identity, header, body, list(buffers))

    def close(self) -> None:
        self._lb._routers.pop(self.endpoint, None)


class Loopback:
    """Node's client and server calls, in one process, without sockets (thread-safe)."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._ports = itertools.count(40000)
        self._lock = threading.Lock()
        self._routers: dict[str, LoopbackRouter] = {}
        self._waiting: dict[tuple[bytes, int], ReplyFuture] = {}
        self._closed = False
        self.sent: list[tuple[str, dict, Any]] = []  # one-way messages, for tests to look at

    def next_id(self) -> int:
        return next(self._ids)

    def add_router(self, host: str, port: int, handler: Handler, **_options: Any) -> LoopbackRouter:
        router = LoopbackRouter(self, handler, port or next(self._ports), host)
        with self._lock:
            if router.endpoint in self._routers:
                raise OSError(98, f"cannot listen on {router.endpoint}: address already in use")
            self._routers[router.endpoint] = router
        return router

    def request(self, endpoint: str, header: dict, body: Any, buffers: list | tuple = (), *, timeout: float | None = None) -> ReplyFuture:
        """The handler at ``endpoint`` gets the request now; the future gets its reply."""
        fut = ReplyFuture()
        router = self._routers.get(endpoint)
        if self._closed:
            fut.set_exception(NodeClosed("the mesh node is closed"))
        elif router is None:
            fut.set_exception(PeerUnavailable(endpoint, "connection refused or unreachable"))
        else:
            identity = endpoint.encode()  # one client per loopback
            key = (identity, header["id"])
            with self._lock:
                self._waiting[key] = fut
            try:
                router.handler(router, identity, header, body, list(buffers))
            except Exception:  # a real server logs it and keeps serving; the request then times out
                pass
            if timeout is not None and not fut.done():
                timer = threading.Timer(timeout, self._expire, (key, endpoint))
                timer.daemon = True
                timer.start()
                fut.add_done_callback(lambda _f: timer.cancel())
        return fut

    def call(self, endpoint: str, header: dict, body: Any, buffers: list | tuple = (), *, timeout: float | None = None) -> tuple:
        fut = self.request(endpoint, header, body, buffers, timeout=timeout)
        try:
            return fut.result(timeout)
        except FutureTimeout:
            raise RequestTimeout(f"{endpoint}: no reply within the deadline") from None

    def send(self, endpoint: str, header: dict, body: Any = b"\xc0", buffers: list | tuple = (), *, control: bool = False) -> None:
        """One-way: recorded in :attr:`sent`, and given to the handler (its reply is dropped)."""
        if self._closed:
            return
        self.sent.append((endpoint, header, body))
        router = self._routers.get(endpoint)
        if router is not None:
            try:
                router.handler(router, endpoint.encode(), header, body, list(buffers))
            except Exception:
                pass

    def close(self) -> None:
        self._closed = True
        with self._lock:
            waiting, self._waiting = self._waiting, {}
            self._routers.clear()
        for fut in waiting.values():
            fut.set_exception(NodeClosed("the mesh node was closed"))

    def _deliver(self, identity: bytes, header: dict, body: Any, buffers: list) -> None:
        with self._lock:
            fut = self._waiting.pop((identity, header.get("re")), None)
        if fut is not None:  # late or unknown replies are dropped, as on the wire
            fut.set_result((header, body, buffers))

    def _expire(self, key: tuple[bytes, int], endpoint: str) -> None:
        with self._lock:
            fut = self._waiting.pop(key, None)
        if fut is not None:
            fut.set_exception(RequestTimeout(f"{endpoint}: no reply within the deadline"))
