"""The request header check: types and sizes of every field a request uses, before it changes anything.

A refused request is answered ``badrequest`` and leaves no trace (no pending task, no session).
"""

from __future__ import annotations

import math
from typing import Any

from mesh._core import wire

__all__ = ["CLS_MAX", "ID_MAX", "LIST_MAX", "NAME_MAX", "check_header"]

# Caps on header fields (a request over one is refused with `badrequest` before it changes anything).
ID_MAX = 128  # characters of an id: sess, obj, task, chain, inst, the refs of a release
NAME_MAX = 256  # characters of a method or attribute name (`m`) and of a registered object name
CLS_MAX = 1024  # characters of a class reference `module:qualname`
LIST_MAX = 4096  # items of a release's `tasks`, and refs in one item's children
WHY_MAX = 32  # characters of a cancel's `why`


def _text(header: dict, key: str, cap: int, required: bool = False, empty: bool = True) -> str | None:
    value = header.get(key)
    if value is None:
        if required:
            return f"'{key}' is missing"
        return None
    if type(value) is not str:
        return f"'{key}' must be a string, not {type(value).__name__}"
    if len(value) > cap:
        return f"'{key}' is {len(value)} characters long, over the limit of {cap}"
    if not empty and not value:
        return f"'{key}' must not be empty"
    return None


def _seconds(header: dict, key: str) -> str | None:
    value = header.get(key)
    if value is None or (type(value) in (int, float) and math.isfinite(value)):
        return None
    return f"'{key}' must be a finite number of seconds, not {type(value).__name__ if type(value) not in (int, float) else value}"


def _flag(header: dict, key: str) -> str | None:
    value = header.get(key)
    if value is None or type(value) in (bool, int):
        return None
    return f"'{key}' must be 0 or 1, not {type(value).__name__}"


def _count(header: dict, key: str, cap: int = (1 << 62) - 1) -> str | None:
    value = header.get(key)
    if value is None or (type(value) is int and 0 <= value <= cap):
        return None
    return f"'{key}' must be an integer from 0 to {cap}, not {value!r:.40}"


def _release_item(item: Any) -> str | None:
    if type(item) is str:
        return None if len(item) <= ID_MAX else f"a task id in 'tasks' is over {ID_MAX} characters"
    if type(item) is not list or len(item) != 3:
        return "an item of 'tasks' must be a task id or [task, ref, [child refs]]"
    task, ref, children = item
    if type(task) is not str or type(ref) is not str or type(children) is not list:
        return "an item of 'tasks' must be a task id or [task, ref, [child refs]]"
    if len(task) > ID_MAX or len(ref) > ID_MAX:
        return f"an id in 'tasks' is over {ID_MAX} characters"
    if len(children) > LIST_MAX:
        return f"an item of 'tasks' names {len(children)} child refs, over the limit of {LIST_MAX}"
    for child in children:
        if type(child) is not str or len(child) > ID_MAX:
            return f"a child ref in 'tasks' must be a string of at most {ID_MAX} characters"
    return None


def _ids(header: dict, key: str) -> str | None:
    value = header.get(key)
    if type(value) is not list or not value:
        return f"'{key}' must be a non-empty list of ids"
    if len(value) > LIST_MAX:
        return f"'{key}' has {len(value)} items, over the limit of {LIST_MAX}"
    for item in value:
        if type(item) is not str or not item or len(item) > ID_MAX:
            return f"each id of '{key}' must be a non-empty string of at most {ID_MAX} characters"
    return None


def _plain_call(header: dict) -> bool:
    """The common call, checked in one expression (False: let the full check say what is wrong)."""
    obj, m, task, chain, sess = header.get("obj"), header.get("m"), header.get("task"), header.get("chain"), header.get("sess")
    return (
        type(obj) is str and len(obj) <= ID_MAX and type(m) is str and len(m) <= NAME_MAX
        and type(header.get("id")) in _INT_OR_NONE and (sess is None or (type(sess) is str and len(sess) <= ID_MAX))
        and (chain is None or (type(chain) is str and len(chain) <= ID_MAX))
        and type(header.get("keep")) in _FLAG_OR_NONE and "dl" not in header and "stream" not in header
        and (type(task) is str and len(task) <= ID_MAX if header.get("keep") else task is None or (type(task) is str and len(task) <= ID_MAX))
    )


_INT_OR_NONE = (int, type(None))
_FLAG_OR_NONE = (bool, int, type(None))


def check_header(header: dict) -> str | None:
    """What is wrong with a request's header (types and sizes of every field it uses), or None.

    Run before a request changes anything, so that a refused request leaves no
    trace (no pending task, no session). Keys this server does not use are ignored.
    """
    op = header.get("op")
    if op == wire.CALL and _plain_call(header):
        return None
    if type(header.get("id")) not in (int, type(None)):
        return "'id' must be an integer"
    problem = _text(header, "sess", ID_MAX)
    if problem:
        return problem
    if op == wire.CALL:
        problem = (
            _text(header, "obj", ID_MAX, required=True) or _text(header, "m", NAME_MAX, required=True)
            or _text(header, "chain", ID_MAX) or _text(header, "task", ID_MAX) or _flag(header, "keep")
            or _seconds(header, "dl")
        )
        if not problem and header.get("keep") and header.get("task") is None:
            problem = "an async call (keep: 1) needs a string 'task'"
        if not problem and header.get("stream") is not None:
            problem = _flag(header, "stream")
            if not problem and header.get("stream") and not header.get("keep"):
                problem = "a streaming call (stream: 1) must be async (keep: 1)"
    elif op == wire.STREAM:
        problem = (
            _text(header, "task", ID_MAX, required=True) or _text(header, "ref", ID_MAX, required=True)
            or _text(header, "inst", ID_MAX) or _text(header, "chain", ID_MAX) or _count(header, "from")
            or _flag(header, "inline")
        )
    elif op == wire.STREAM_ACK:
        problem = (
            _text(header, "task", ID_MAX, required=True) or _text(header, "ref", ID_MAX, required=True)
            or _count(header, "at") or _flag(header, "close")
        )
    elif op == wire.STREAM_STOP:
        problem = _text(header, "task", ID_MAX, required=True)
    elif op == wire.CANCEL:
        problem = _text(header, "why", WHY_MAX) or _flag(header, "all")
        if not problem:
            problem = (_text(header, "sess", ID_MAX, required=True) if header.get("all")
                       else _text(header, "task", ID_MAX, required=True))
    elif op == wire.RESULT:
        problem = _text(header, "task", ID_MAX, required=True) or _text(header, "inst", ID_MAX)
    elif op == wire.CREATE:
        problem = (
            _text(header, "obj", ID_MAX, required=True, empty=False) or _text(header, "cls", CLS_MAX, required=True, empty=False)
            or _text(header, "name", NAME_MAX) or _flag(header, "detached")
            or _count(header, "ckpt", 2) or _count(header, "restarts", 1_000_000) or _count(header, "restore", 1_000_000)
        )
    elif op == wire.CREATE_MANY:
        problem = _ids(header, "objs") or _text(header, "cls", CLS_MAX, required=True, empty=False) or _flag(header, "detached")
    elif op == wire.GETATTR:
        problem = _text(header, "obj", ID_MAX, required=True) or _text(header, "m", NAME_MAX, required=True)
    elif op == wire.DELETE:
        problem = _text(header, "obj", ID_MAX, required=True)
    elif op == wire.LOOKUP:
        problem = _text(header, "name", NAME_MAX, required=True)
    elif op == wire.RELEASE:
        tasks = header.get("tasks")
        if type(tasks) is not list:
            problem = "'tasks' must be a list"
        elif len(tasks) > LIST_MAX:
            problem = f"'tasks' has {len(tasks)} items, over the limit of {LIST_MAX}"
        elif not all(type(t) is str and len(t) <= ID_MAX for t in tasks):  # (the common release: plain ids)
            problem = next(filter(None, map(_release_item, tasks)), None)
    return problem
