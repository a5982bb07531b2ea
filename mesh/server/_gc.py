"""The garbage collector of a dedicated server process (``zmq-agent-server start``).

A server with thousands of live objects and coroutine calls pays for CPython's default
thresholds (700, 10, 10): every burst of calls allocates Tasks, frames and futures that live
for the call, survive the young generations and trigger full collections, each of which walks
every object of the server (10,000 agents each awaiting ``asyncio.sleep(1)``: several pauses of
0.2-0.5 s, most of the burst's time; ``benchmarks/aio_agents.py``). A server's own process
therefore collects less often: :data:`THRESHOLDS`, and what start-up loaded (modules, classes)
is frozen out of the collections (``gc.freeze()``). Cyclic garbage is still collected, later.

Only in the server's own process: a server launched inside an application
(``launch(in_subprocess=False)``) leaves the application's collector alone. ``MESH_SERVER_GC=default``
keeps CPython's defaults; ``MESH_SERVER_GC=a,b,c`` sets those three thresholds instead (measurements).
"""

from __future__ import annotations

import gc
import os

__all__ = ["ENV", "THRESHOLDS", "tune"]

ENV = "MESH_SERVER_GC"
THRESHOLDS = (50_000, 20, 100)  # young allocations, then young and middle collections, before the next level


def tune() -> bool:
    """Set the collector of a dedicated server process (after start-up); False if ``MESH_SERVER_GC=default``."""
    raw = os.environ.get(ENV, "").strip().lower()
    if raw == "default":
        return False
    thresholds = THRESHOLDS
    if raw:  # "a,b,c": thresholds of one's own (measurements)
        try:
            thresholds = tuple(int(x) for x in raw.split(","))  # type: ignore[assignment]
        except ValueError:
            thresholds = THRESHOLDS
    gc.collect()
    gc.freeze()  # start-up's objects (modules, classes, the server itself) are never garbage
    gc.set_threshold(*thresholds)
    return True
