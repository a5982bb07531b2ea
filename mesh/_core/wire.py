"""The wire's vocabulary: operation names, header keys and error kinds, named once.

``transport/PROTOCOL.md`` is the specification; ``tests/test_wire.py`` holds its
tables against the constants here, so the document and the code cannot drift.

Operations (requests)::

    op        reply body                      who answers
    ping      {name, capacity, load, ...}     I/O thread
    create    {methods, cls, ...}             worker (the constructor)
    call      the return value                the object's mailbox
    getattr   the attribute's value           worker, outside the mailbox
    result    the task's value                long poll on the result store
    delete    nil                             I/O thread
    lookup    {obj, cls, methods, ...}        I/O thread
    status    ping's fields + agents          I/O thread
    stop      nil                             I/O thread, then shutdown
    lease     one-way                         I/O thread
    bye       one-way                         I/O thread
    release   one-way                         I/O thread
    stream    items, pushed as partial replies  I/O thread (1.3): a reader subscribes to a stream
    stream_ack  one-way                       I/O thread (1.3): items consumed (credit), or leave
    stream_stop {stopped}                     I/O thread (1.3): close a stream's generator
    cancel    true if it stopped the task     I/O thread (1.3)
    create_many {info, items}                 workers, one reply for all (1.4): pipelined creation
    batch     none: each message its own      the transport (1.4): many messages in one

Replies are ``ok`` or ``err``; an ``err`` carries a ``kind``.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = [
    "KINDS",
    "ONE_WAY",
    "OPS",
    "REPLIES",
    "Entry",
    "NIL",
    "PY_VERSION",
    "err_entry",
    "err_header",
]

# A reply as the server keeps and sends it: (header fields without ``re``, body bytes, buffers).
Entry = tuple[dict[str, Any], bytes, list[bytes]]
NIL = b"\xc0"  # msgpack nil: the body of a reply without a value
# ``py`` of ping replies and of a create that sends its class by value: cloudpickle needs the same
PY_VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"

# -- operations (never rename: they are the protocol) ------------------------------------------
PING = "ping"
CREATE = "create"
CALL = "call"
GETATTR = "getattr"
RESULT = "result"
DELETE = "delete"
LOOKUP = "lookup"
STATUS = "status"
STOP = "stop"
LEASE = "lease"
BYE = "bye"
RELEASE = "release"
# 1.3: token streams (a reader subscribes; items come as partial replies of its ``stream`` request)
STREAM = "stream"
STREAM_ACK = "stream_ack"
STREAM_STOP = "stream_stop"

CANCEL = "cancel"  # 1.3: cancel a task (and what it started), or a session's tasks
# 1.4: many messages in one (transport/_framing.py splits it; its messages are served one by one)
BATCH = "batch"

OPS = (PING, CREATE, CALL, GETATTR, RESULT, DELETE, LOOKUP, STATUS, STOP, LEASE, BYE, RELEASE, STREAM, STREAM_ACK,
       STREAM_STOP, CANCEL, BATCH)
ONE_WAY = frozenset((LEASE, BYE, RELEASE, STREAM_ACK))
# 1.4: among a ``release`` item's child refs: the holder was also pickled elsewhere (to disk, into a
# result), so copies may still be read: once no counted holder is left the result is loose, not dropped
PINNED_REF = "~pinned"
CREATE_MANY = "create_many"  # 1.4: many objects of one class in one request (pipelined creation)
OPS = (*OPS, CREATE_MANY)

OK = "ok"
ERR = "err"
REPLIES = (OK, ERR)

# -- error kinds of ``err`` replies ---------------------------------------------------------------
K_REMOTE = "remote"  # the user's code raised; ``type`` and ``tb`` are set
K_NOTFOUND = "notfound"
K_EXPIRED = "expired"
K_NEEDCLASS = "needclass"
K_EXISTS = "exists"
K_TOOLARGE = "toolarge"
K_UNAVAILABLE = "unavailable"
K_BADREQUEST = "badrequest"
K_PROTOCOL = "protocol"
K_INTERNAL = "internal"  # a bug in the server's own handler (logged with its traceback there)
K_CANCELLED = "cancelled"  # 1.3: the task was stopped before it finished (cancel, or its stream was stopped)
K_DEADLINE = "deadline"  # 1.3: the call's deadline (header ``dl``) passed before it ended

KINDS = (
    K_REMOTE,
    K_NOTFOUND,
    K_EXPIRED,
    K_NEEDCLASS,
    K_EXISTS,
    K_TOOLARGE,
    K_UNAVAILABLE,
    K_BADREQUEST,
    K_PROTOCOL,
    K_INTERNAL,
    K_CANCELLED,
    K_DEADLINE,
)


def err_header(kind: str, msg: str, exc_type: str = "", tb: str = "") -> dict[str, Any]:
    """The header of an ``err`` reply (without ``re``, which the transport adds)."""
    header: dict[str, Any] = {"op": ERR, "kind": kind, "msg": msg}
    if exc_type:
        header["type"] = exc_type
    if tb:
        header["tb"] = tb
    return header


def err_entry(kind: str, msg: str, exc_type: str = "", tb: str = "") -> Entry:
    """A whole ``err`` reply: its header, a nil body, no buffers."""
    return err_header(kind, msg, exc_type, tb), NIL, []


# -- header keys (the table "Header keys" of PROTOCOL.md; receivers ignore keys they do not know) --
HEADER_KEYS = (
    "op", "id", "re", "sess", "obj", "m", "cls", "task", "keep", "chain", "name", "detached",
    "tasks", "seq", "inst", "big", "kind", "msg", "type", "tb", "etype",
    # 1.3: tracing
    "traceparent", "tracestate",
    # 1.3: streams
    "stream", "ref", "from", "at", "more", "end", "close", "inline",
    # 1.3: durable agents
    "ckpt", "restarts", "restore",
    # 1.3: deadlines and cancel
    "dl", "why", "all",
)

# values of a cancel's ``why``: the error kind the stopped call is answered with
WHY_CANCEL = K_CANCELLED
WHY_DEADLINE = K_DEADLINE
HEADER_KEYS = (*HEADER_KEYS, "objs")  # 1.4: create_many
