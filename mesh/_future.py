"""Where release 0.1.0 kept its futures: its pickles name ``mesh._future._rebuild``.

Futures live in :mod:`mesh.client._future` since; this module only lets 0.1.0's pickles of an
``AsyncResult`` or a ``Placeholder`` (saved to disk, say) load here. The arguments are the same
(``placeholder, address, task[, pool, ref, inst]``). Nothing in the mesh imports it.
"""

from __future__ import annotations

from mesh.client._future import _rebuild

__all__ = ["_rebuild"]
