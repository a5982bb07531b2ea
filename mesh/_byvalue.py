"""A class pickled by value that keeps its source file names, so remote tracebacks name them.

cloudpickle (3.1) replaces every ``co_filename`` of code it pickles by value with
``"<dynamic-code>"`` (for deterministic payloads); a user's traceback from a class defined in a
script or a function then says ``File "<dynamic-code>", line 12``. The file name costs a few bytes
per function and is what users read (issue 12: "the remote traceback naming the user's real file
and line even for classes sent by value").
"""

from __future__ import annotations

import io
import types
from collections import ChainMap
from typing import Any

import cloudpickle
from cloudpickle import cloudpickle as _cp

_DYNAMIC = "<dynamic-code>"


def _code_reduce(code: types.CodeType) -> Any:
    fn, args = _cp._code_reduce(code)
    if code.co_filename != _DYNAMIC:
        args = tuple(code.co_filename if (type(a) is str and a == _DYNAMIC) else a for a in args)
    return fn, args


class _Pickler(cloudpickle.Pickler):
    dispatch_table = ChainMap({types.CodeType: _code_reduce}, cloudpickle.Pickler.dispatch_table)


# a cloudpickle without these internals (another major version): its own dumps, as before
_USABLE = hasattr(_cp, "_code_reduce") and isinstance(getattr(cloudpickle.Pickler, "dispatch_table", None), ChainMap)


def dumps(obj: Any) -> bytes:
    """``cloudpickle.dumps(obj)``, keeping the file names of code pickled by value."""
    if not _USABLE:
        return cloudpickle.dumps(obj)
    buf = io.BytesIO()
    _Pickler(buf, protocol=cloudpickle.DEFAULT_PROTOCOL).dump(obj)
    return buf.getvalue()
