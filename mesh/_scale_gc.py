"""The client's garbage collector at scale.

A process that holds hundreds of thousands of proxies and results pays for CPython's default
thresholds (700, 10, 10): every call allocates objects that live for the call, and each young
collection also touches what they refer to, spread over hundreds of MiB. Measured with
``benchmarks/million.py`` (4 servers, 500,000 agents, the client's CPU): 31 -> 20 us per
creation and 82 -> 53 us per call of the round with the thresholds below.

So once a process has created :data:`AT` objects through the mesh's pipelined creation (a
user who does not create at that scale never sees it), its collector runs young collections
less often: :data:`THRESHOLDS`, as a server's own process (``mesh.server._gc``). Only if the
thresholds are still CPython's defaults (a program that set its own keeps them), and never with
``MESH_CLIENT_GC=default``. Cyclic garbage is still collected, later.
"""

from __future__ import annotations

import gc
import logging
import os

__all__ = ["AT", "ENV", "THRESHOLDS", "tune"]

ENV = "MESH_CLIENT_GC"
AT = 50_000  # pipelined creations of this process before the thresholds change
THRESHOLDS = (50_000, 20, 100)  # young allocations, then young and middle collections, before the next level
_DEFAULTS = (700, 10, 10)

log = logging.getLogger("mesh")


def tune() -> bool:
    """Raise the collector's thresholds (see the module's docstring); False if left alone."""
    if os.environ.get(ENV, "").strip().lower() == "default" or gc.get_threshold() != _DEFAULTS:
        return False
    gc.set_threshold(*THRESHOLDS)
    log.debug("this process created %d objects through the mesh: gc thresholds %s", AT, THRESHOLDS)
    return True
