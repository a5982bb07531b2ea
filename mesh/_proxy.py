"""Where release 0.1.0 kept its proxies: its pickles name ``mesh._proxy.RpcObject``.

Proxies live in :mod:`mesh.client._proxy` since; this module only lets 0.1.0's pickles of a
proxy load here (its arguments, ``address, object_id, cls_name, methods, pool, inst``, are still
the constructor's). Nothing in the mesh imports it.
"""

from __future__ import annotations

from mesh.client._proxy import RpcObject

__all__ = ["RpcObject"]
