"""The caller's side: the process's client, proxies, futures, the release protocol (caller side)
and server selection.

Imports ``mesh._core``, ``mesh._errors``, ``mesh._msg``, ``transport`` and ``discovery``; never
``mesh.server`` (the two sides meet only in ``mesh._core``). Rooms:

- ``_client``: ``Client`` (encode + size check, request / call, leases, releases), ``get_client``;
- ``_peers``: ``PeerBook``, what the client knows of each server and object, one lock;
- ``_replies``: decode a reply, error kind -> exception, transport error -> ``MeshError``, ``wait``;
- ``_proxy``: ``RpcObject`` and its methods (sync fast path vs. the ordered path);
- ``_future``: ``AsyncResult``, ``Placeholder`` (wait, fetch, follow forwarded futures, Redis);
- ``_holders``: the release protocol, caller side (counted pickling, reports, lenders);
- ``_selection``: ``ServerInfo``, ``servers``, ping / survey / choose / mark_dead;
- ``_aio``: ``await`` on a future (a done-callback wakes the awaiting loop; no thread per await);
- ``_stream``: ``Stream`` and the streaming Placeholder (readers subscribe to the producer; items pushed);
- ``_wait``: ``wait`` / ``as_completed`` over many futures, from threads.
"""

from mesh.client._future import AsyncResult, Placeholder, is_future, resolve
from mesh.client._proxy import RpcObject
from mesh.client._selection import ServerInfo, servers
from mesh.client._stream import Stream
from mesh.client._wait import as_completed, wait

__all__ = [
    "AsyncResult", "Placeholder", "RpcObject", "ServerInfo", "Stream", "as_completed", "is_future", "resolve", "servers", "wait",
]
