"""The one process-global object: settings, the process's transport Node, session, pid, and the
servers that serve in this process (``producers``).

Both sides take what they share from here: the client (``mesh.client._client``) sends on the
Node and fetches from in-process producers without the network; an in-process server
(``mesh.server._host``) binds its ROUTER on the same Node and registers itself as a producer.
:func:`current` makes it on first use (anew after a fork or after :func:`reset`); :func:`reset`
closes it (``mesh.shutdown()``, tests).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import transport
from mesh._core import settings as _settings
from mesh._core.context import blocking

__all__ = ["Runtime", "current", "release_if_unused", "reset"]

# address -> callable(task id, server run id) -> Future of a result reply
Producer = Callable[[str, Any], Future]


class Runtime:
    """What this process shares between its client and its in-process servers."""

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
        # servers hosted in this process, by address: a fetch from one of them skips the network
        self.producers: dict[str, Producer] = {}
        # mesh.shutdown() ended the client while servers of this process still served: the last
        # of them to stop closes the runtime (release_if_unused)
        self.client_closed = False

    @property
    def closed(self) -> bool:
        return self.node.closed

    def live(self) -> bool:
        """Usable by this process: not closed, not inherited through a fork."""
        return self.pid == _pid and not self.closed  # (every call asks: no getpid() system call)

    def has_routers(self) -> bool:
        """Servers serve on this Node (their connections outlive a settings change)."""
        return self.node.serving

    def close(self) -> None:
        self.producers.clear()
        self.node.close()


_lock = threading.Lock()
_current: Runtime | None = None
_pid = os.getpid()  # this process's, kept by the fork hook below


def _after_fork() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


def current(create: bool = True) -> Runtime | None:
    """The process's runtime; made on first use (and anew after a fork or a close).

    ``create=False``: the live one or ``None`` (finalizers, which must never start a Node).
    """
    global _current
    rt = _current
    if rt is not None and rt.live():
        return rt
    if not create:
        return None
    with _lock:
        if _current is None or not _current.live():
            _current = Runtime(_settings.current())
        return _current


def reset() -> None:
    """Close the process's runtime (idempotent); the next :func:`current` makes a new one."""
    global _current
    with _lock:
        rt, _current = _current, None
    if rt is not None and rt.pid == os.getpid():
        rt.close()


def release_if_unused(rt: Runtime) -> None:
    """An in-process server stopped: close ``rt`` if it was the last one and the client is closed."""
    global _current
    with _lock:
        if _current is not rt or not rt.client_closed or rt.producers:
            return
        _current = None
    if rt.pid == os.getpid():
        rt.close()
