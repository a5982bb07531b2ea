"""The global names a code object reads, writes or deletes, without ``dis``: cloudpickle's
``_walk_global_ops`` made cheap (it picks the globals a function pickled by value carries).

cloudpickle walks ``dis.get_instructions(code)``, which builds an ``Instruction`` (positions,
argument repr...) for every instruction of every method. For a class's first pickle by value (the
fallback of a first creation: on ``to_dist()``'s path) that was 0.4-0.8 ms of a fresh process's
~2.5 ms init, for a 3-method class. Reading the opcodes straight from ``co_code`` gives the same
names, in the same order, ~10x faster.

``co_code`` is the deoptimised bytecode (CPython 3.11-3.13): 2-byte units ``(op, arg)``, inline
caches as zeroed ``CACHE`` units (no argument: skipped), ``EXTENDED_ARG`` prefixes, and
``LOAD_GLOBAL``'s name index in ``arg >> 1``. Another Python keeps cloudpickle's own walk.
"""

from __future__ import annotations

import opcode
import sys
import types
from collections.abc import Iterator
from typing import Any

__all__ = ["global_names", "install"]

_LOAD = opcode.opmap["LOAD_GLOBAL"]
_NAMED = frozenset((opcode.opmap["STORE_GLOBAL"], opcode.opmap["DELETE_GLOBAL"]))
_EXT = opcode.opmap["EXTENDED_ARG"]
_HAVE_ARG = opcode.HAVE_ARGUMENT
_KNOWN = ((3, 11), (3, 12), (3, 13))  # bytecode layouts checked against dis (tests/test_init4_startup.py)


def global_names(code: types.CodeType) -> Iterator[str]:
    """The names of ``code``'s global-referencing instructions, as ``dis`` gives their ``argval``
    (not those of nested code objects: cloudpickle walks those itself)."""
    co = code.co_code
    names = code.co_names
    ext = 0
    for i in range(0, len(co), 2):
        op = co[i]
        if op < _HAVE_ARG:
            ext = 0
            continue
        arg = co[i + 1] | ext
        if op == _EXT:
            ext = arg << 8
            continue
        ext = 0
        if op == _LOAD:
            yield names[arg >> 1]
        elif op in _NAMED:
            yield names[arg]


def install(cp: Any) -> bool:
    """Use :func:`global_names` as ``cp._walk_global_ops`` (``cp``: the ``cloudpickle.cloudpickle``
    module) where the layout is known and cloudpickle walks the same three opcodes. It is the same
    function for every cloudpickle user of the process (the same names, in the same order)."""
    ops = getattr(cp, "GLOBAL_OPS", None)
    if sys.version_info[:2] not in _KNOWN or not callable(getattr(cp, "_walk_global_ops", None)):
        return False
    if ops is None or set(ops) != {_LOAD, *_NAMED}:
        return False
    cp._walk_global_ops = global_names
    return True
