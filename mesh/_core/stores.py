"""Opening the state store of durable agents by URL: a directory, or Redis (``redis://...``).

One store object per URL and secret in a process. The Redis store's module (and redis-py with it) is
imported only when a Redis store is opened: a server with a directory store does not load it.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from mesh._core.state_store import StateStore

__all__ = ["close_stores", "default_url", "open_store"]


def default_url() -> str:
    """The store of servers that were given none: ``MESH_STATE_STORE``, else a per-user directory."""
    env = os.environ.get("MESH_STATE_STORE")
    if env:
        return env
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "zmq-agent-mesh", "durable")


_opened: dict[tuple[str, bytes], StateStore] = {}
_lock = threading.Lock()


def open_store(url: str | None, secret: bytes | None = None) -> StateStore:
    """The store at ``url`` (``None``: :func:`default_url`), one per URL and secret in a process.

    Raises:
        StateStoreError: the directory cannot be made, or redis-py is missing.
    """
    from mesh._core.state_store import DirectoryStore, state_key  # with the first store, not with the server

    url = url or default_url()
    key = state_key(secret)
    with _lock:
        store = _opened.get((url, key))
        if store is None:
            if url.startswith(("redis://", "rediss://", "unix://")):
                from mesh._core._state_redis import RedisStore

                store = RedisStore(url, key)
            else:
                path, fsync = url, True
                if path.endswith(("?fsync=0", "?fsync=1")):  # the durability level of the directory store
                    path, fsync = path[:-8], path.endswith("1")
                path = unquote(urlsplit(path).path) if path.startswith("file://") else path
                store = DirectoryStore(path, key, fsync=fsync)
            _opened[(url, key)] = store
        return store


def close_stores() -> None:
    with _lock:
        stores = list(_opened.values())
        _opened.clear()
    for store in stores:
        store.close()
