"""The C allocator of a dedicated server process (``zmq-agent-server start``), for large values.

A server that makes, receives or keeps values of several MB (a 10 MB result fetched by another
server, a 10 MB argument) asks glibc's ``malloc`` for such a block per value. glibc maps
blocks above its *mmap threshold* (128 KiB at start, then raised to the size of the largest
mapped block freed so far; no longer adjusted once any ``MALLOC_*`` tuning is set) with
their own ``mmap``, and unmaps them when freed: the next value lands in fresh pages and faults
each one in. Measured here (``benchmarks/placeholder_transfer.py`` prints the faults per
transfer): ~2,440 faults per 10 MB value, ~5 ms of CPU on an idle machine and 20-25 ms when the
machine is loaded, against ~0.5 ms to write the same bytes into pages already mapped. Whether a
process had raised its threshold depended on the order in which it had freed its first values,
so some runs paid it on every transfer and others did not.

A server's own process therefore fixes the threshold at :data:`MMAP_THRESHOLD` (32 MiB, the
largest glibc accepts) and trims the free top of a heap back to the system only past
:data:`TRIM_THRESHOLD`: freed blocks up to 32 MiB are reused by the next value (bigger ones are
still mapped and unmapped per value), and each heap keeps at most 32 MiB of free memory at its
top (glibc's own dynamic threshold, after freeing one 10 MB block, keeps 20 MB).

Set once the server is up (start-up's own short-lived blocks above 128 KiB are then still unmapped
or trimmed, not kept), through ``_ctypes`` rather than the ``ctypes`` package. Only in the server's
own process, only with glibc, and not when the environment already tunes
``malloc`` (any ``MALLOC_*_`` variable or a ``glibc.malloc`` tunable: the operator's choice
stands). ``MESH_SERVER_MALLOC=default`` keeps glibc's behaviour.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

__all__ = ["ENV", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune"]

ENV = "MESH_SERVER_MALLOC"
MMAP_THRESHOLD = 32 * 2**20  # glibc refuses more (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 32 * 2**20  # what glibc itself would pick (2x) after freeing a 16 MiB block
_M_TRIM_THRESHOLD = -1  # mallopt parameters, <malloc.h>
_M_MMAP_THRESHOLD = -3


def tune() -> bool:
    """Set glibc's thresholds for this process; False if not done (not glibc, opted out, already tuned)."""
    if os.environ.get(ENV, "").strip().lower() == "default" or not sys.platform.startswith("linux"):
        return False
    if any(k.startswith("MALLOC_") and k.endswith("_") for k in os.environ) or "glibc.malloc." in os.environ.get(
        "GLIBC_TUNABLES", ""
    ):
        return False
    mallopt = _mallopt()
    if mallopt is None:  # musl and others: no mallopt, nothing to tune
        return False
    # the trim threshold first: setting either one turns glibc's dynamic adjustment off
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def _mallopt() -> Callable[[int, int], int] | None:
    """libc's ``int mallopt(int, int)`` from the process's own symbols; None if there is none.

    Through ``_ctypes`` (the C half of ``ctypes``) and two classes declared as ``ctypes`` declares
    ``c_int`` and a ``CDLL``'s functions: the ``ctypes`` package itself (its ~40 types, ``CDLL``,
    ``LibraryLoader``, ``ctypes._endian``) costs a server ~0.15 MiB more for one call at start.
    ``ctypes`` if that fails (another interpreter's ``_ctypes``).
    """
    try:
        import _ctypes

        class _Int(_ctypes._SimpleCData):
            _type_ = "i"

        class _Fn(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL
            _restype_ = _Int
            _argtypes_ = (_Int, _Int)

        class _Self:  # what CFuncPtr((name, library)) reads: the handle of dlopen(NULL)
            _handle = _ctypes.dlopen(None, os.RTLD_LOCAL)

        return _Fn(("mallopt", _Self()))
    except AttributeError:  # no such symbol (musl and others)
        return None
    except Exception:  # noqa: BLE001  # not CPython's _ctypes as we know it: the public way
        pass
    import ctypes

    try:
        fn = ctypes.CDLL(None).mallopt  # find_library would run ldconfig
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int)
    fn.restype = ctypes.c_int
    return fn
