"""Where ``to_dist`` puts an object: a given server, a discovered one, or the child server.

Owns ``DistConf`` (the options' type); ``mesh._rpc`` imports this module, never the reverse.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

import transport
from mesh import _byvalue, _create_many, _pipeline
from mesh._create_req import _created, _send_create, first_pipelined, inflight_fallback, ref_of
from mesh._create_req import _firsts as _create_req_firsts
from mesh._core import ids, settings as _settings, wire
from mesh._core.address import check_resolves, normalize_address
from mesh._errors import MeshError, ServerUnavailable
from mesh.client import RpcObject, _restart
from mesh.client._client import cannot_send, get_client
from mesh.client._replies import decode_reply, wait
from mesh.client._selection import choose, mark_dead, settled
from mesh.server import AgentServer
from mesh.server._launcher import spawn_process, stop_process

__all__ = ["DistConf", "child", "child_server", "create", "place", "stop_child"]


class DistConf(dict):
    """The arguments of ``to_dist``, for the constructor keyword ``to_dist=``.

    ``DistConf(host="10.0.0.5", port=12001)``; any further keyword is a
    ``to_dist`` option.
    """

    def __init__(self, host: str | None = None, port: int | str | None = None, **options: Any) -> None:
        super().__init__(host=host, port=port, **options)


log = logging.getLogger("mesh")

_child: Any = None
_child_used = False  # something placed on the child server (else it may be a spare, see _start_spare)
_child_lock = threading.Lock()
_by_value: set[tuple[str, type]] = set()  # (server, class) pairs that need the class by value
_resolved: set[str] = set()  # addresses whose host resolved once (not asked again per object)
_proven: set[tuple[str, type]] = set()  # (server, class) pairs created once: later creations pipeline
_proven_cls: set[type] = set()  # classes created once on some server (waiting for that reply)
_trying: set[tuple[str, type]] = set()  # (discovered server, class): the first there went pipelined, no reply yet
_tables: weakref.WeakKeyDictionary[type, dict] = weakref.WeakKeyDictionary()  # class -> its proxies' method table
# AgentScope's to_dist options that have no meaning here: accepted, so migrated code runs
_AGENTSCOPE_OPTIONS = {"max_pool_size", "max_timeout_seconds", "local_mode", "lazy_launch", "max_expire_time"}
_PLAIN_OPTIONS = frozenset(("host", "port", "name", "detached", "_attrs", "checkpoint", "max_restarts"))


def place(cls: type, args: tuple, kwargs: dict, conf: DistConf, *, wait_reply: bool = False) -> RpcObject:
    """Create ``cls(*args, **kwargs)`` on a server chosen by ``conf`` and return its proxy.

    ``wait_reply``: never pipeline (see :func:`create`).
    """
    if not _PLAIN_OPTIONS.issuperset(conf):  # (the common case: nothing to check further)
        unknown = set(conf) - _PLAIN_OPTIONS - _AGENTSCOPE_OPTIONS
        if unknown:
            raise TypeError(f"unknown to_dist option(s): {', '.join(sorted(unknown))}")
        log.debug("to_dist ignores AgentScope option(s): %s", ", ".join(sorted(set(conf) & _AGENTSCOPE_OPTIONS)))
    options: dict[str, Any] = {"name": conf.get("name"), "detached": bool(conf.get("detached")),
                               "attrs": conf.get("_attrs"), "durable": _durable_options(conf), "wait_reply": wait_reply}
    host, port = conf.get("host"), conf.get("port")
    if host is None and port is not None:
        host = "127.0.0.1"  # a port alone means this machine, as in AgentScope
    if host is not None:
        return create(normalize_address(host, port), cls, args, kwargs, **options)
    first = _first_discovery()
    # the first placement: the child server starts in the background (a spare while discovery runs)
    # and the client's runtime meanwhile here (needed either way)
    spare = _start_spare() if first or (_child is None and not _settings.current().discovery) else None
    if spare is not None:
        get_client()
    if not first:
        spare = None  # nothing to discover: the spare is the child
    for _ in range(3):  # a discovered server may have died since it last answered a ping
        address = _discovered()
        if address is None:
            break
        def elsewhere(dead: str = address) -> RpcObject:  # a pipelined create found it gone: place it again
            mark_dead(dead)
            return place(cls, args, kwargs, conf, wait_reply=True)  # (a new object id: none was used yet)

        try:
            obj = create(address, cls, args, kwargs, elsewhere=elsewhere, **options)
        except ServerUnavailable:
            mark_dead(address)
            continue
        if spare is not None:
            _drop_spare(spare)
        return obj
    return create(child_server().address, cls, args, kwargs, **options)


def _durable_options(conf: dict) -> tuple[int, int] | None:
    """``(ckpt, max_restarts)`` of the ``checkpoint`` and ``max_restarts`` options, or None (not durable)."""
    checkpoint, restarts = conf.get("checkpoint"), conf.get("max_restarts")
    if checkpoint in (None, False):
        mode = 0
    elif checkpoint is True:
        mode = 1
    elif checkpoint == "best-effort":
        mode = 2
    else:
        raise ValueError(f"checkpoint must be True, False or 'best-effort', not {checkpoint!r}")
    if restarts is None:
        restarts = 0
    elif type(restarts) is not int or restarts < 0:
        raise ValueError(f"max_restarts must be an integer of 0 or more, not {restarts!r}")
    return (mode, restarts) if mode or restarts else None


def _restart_target(excluded: set[str], state_store: str | None = None) -> str:
    """Where a durable object whose server died is restarted: a discovered server, else the child."""
    for address in excluded:
        mark_dead(address)
    address = _discovered()
    if address is not None and address not in excluded:
        return address
    return child_server(state_store=state_store).address


_restart.placer = _restart_target


def _first_discovery() -> bool:
    return bool(_settings.current().discovery) and not settled()


def _start_spare() -> threading.Thread | None:
    """Start the child server while the first discovery runs; when that finds a server, the spare is
    stopped again (:func:`_drop_spare`). Its process is spawned here, first: its start (~0.1 s) is the
    longest step. A thread then waits for its ready line holding ``_child_lock`` (taken here), so
    :func:`child_server` waits for this child instead of starting a second one."""
    if _child is not None or not _child_lock.acquire(blocking=False):
        return None  # (held: a child is being started already)
    try:
        if _child is not None:
            raise RuntimeError("a child server runs already")
        server = _new_child()
        server._proc = spawn_process(server.options)
    except Exception as exc:  # (the real fallback tries again and reports it)
        _child_lock.release()
        log.debug("no spare child server: %s", exc)
        return None
    thread = threading.Thread(target=_spare_main, args=(server,), name="mesh-spare-child", daemon=True)
    try:
        thread.start()
    except BaseException:
        stop_process(server._proc, 5.0)
        _child_lock.release()
        raise
    return thread


def _spare_main(server: Any) -> None:
    global _child
    try:
        server.launch(in_subprocess=True)  # (spawned already: it reads the ready line)
        _child = server
    except Exception as exc:  # (the real fallback tries again and reports it)
        log.debug("starting the spare child server failed: %s", exc)
    finally:
        _child_lock.release()


def _drop_spare(thread: threading.Thread) -> None:
    """A discovered server took the object: stop the spare child unless something uses it."""

    def run() -> None:
        global _child
        thread.join()
        with _child_lock:
            if _child_used or _child is None:
                return
            server, _child = _child, None
        server.shutdown()

    threading.Thread(target=run, name="mesh-spare-stop", daemon=True).start()


def _discovered() -> str | None:
    if not _settings.current().discovery:
        return None
    try:
        return choose()
    except Exception as exc:  # discovery is a convenience: never fail placement over it
        log.warning("server discovery failed (%s); using the child server", exc)
        return None


def _check_resolves(address: str) -> None:
    if address in _resolved:
        return
    try:
        check_resolves(address)
    except OSError as exc:
        host = address[len("tcp://"):].rpartition(":")[0].strip("[]")
        raise ServerUnavailable(f"{address}: cannot resolve host {host!r}: {exc}") from None
    if len(_resolved) < 4096:
        _resolved.add(address)


def create(
    address: str, cls: type, args: tuple, kwargs: dict, *, name: str | None = None, detached: bool = False,
    attrs: dict | None = None, durable: tuple[int, int] | None = None, object_id: str | None = None,
    by_value: bool | None = None, wait_reply: bool = False, elsewhere: Callable[[], RpcObject] | None = None,
) -> RpcObject:
    """Create the object on ``address``, sending its class by value if the server lacks it.

    A detached object outlives this process; others are deleted when it exits
    (or stops renewing its lease). ``name`` registers it for :func:`mesh.get`.

    The first creation of a class on a server waits for the connection only (unless the server was
    discovered and the class made fine on another one: not even that); later ones are pipelined (:mod:`mesh._pipeline`):
    the proxy comes back at once, and an error shows at its first use. A named, detached or durable object, and ``wait_reply``, wait. ``elsewhere()``: where a pipelined
    create goes when the server turns out to be unavailable (placement by discovery).

    Raises:
        ServerUnavailable, AuthenticationError: the server cannot be used.
        RemoteError: the constructor raised there (an object that waits for the answer).
    """
    _check_resolves(address)
    address = _pipeline.shared(address)
    client = get_client()
    object_id = object_id or ids.new_chain()  # unique across processes; no system call per object
    if by_value is None:  # a script's class (__main__) is never importable there: by value from the start
        by_value = cls.__module__ == "__main__" or (address, cls) in _by_value
    methods = _methods(cls)
    key = (address, cls)
    if not wait_reply and name is None and durable is None:  # durable: needs the reply
        extra = (client, address, cls, args, kwargs, detached, attrs, elsewhere)
        if elsewhere is not None and cls in _proven_cls and key not in _proven and key not in _trying:
            _trying.add(key)  # a discovered server (it answered a ping) new to a class made elsewhere: with a fallback
            proxy = _pipeline.make(address, object_id, cls.__name__, methods)
            fut = _send_create(client, address, cls, args, kwargs, object_id, None, detached, attrs, by_value,
                               fallback=None if by_value else _byvalue.fallback(cls))
            _track(proxy, extra, fut, first=True)
            return proxy
        if key in _proven or key in _trying:
            proxy = _pipeline.make(address, object_id, cls.__name__, methods)
            if key not in _proven and not by_value and (_child is None or address != _child.address):
                fallback = inflight_fallback(key, _proven)  # the first is not answered yet: the same fallback
                if fallback is not None:
                    _track(proxy, extra, _send_create(client, address, cls, args, kwargs, object_id, None, detached,
                                                      attrs, False, fallback=fallback), first=True)
                    return proxy
                by_value = key in _by_value  # (the first answered meanwhile)
            if _batched(client, address, cls, args, kwargs, object_id, detached, attrs, by_value, proxy, extra):
                return proxy  # its batch's reply settles it (_built, or _track with its own reply)
            fut = _send_create(client, address, cls, args, kwargs, object_id, name, detached, attrs, by_value)
            _track(proxy, extra, fut)
            return proxy
        if not detached:  # the first here: it returns once the connection is proven, not the reply (_create_req)
            return first_pipelined(client, address, cls, args, kwargs, object_id, methods, by_value, extra, _trying,
                                   _child is None or address != _child.address, _track)
    # the first creation of a class on a server carries the class by value too (unless the server is our
    # child, which imports what we import), used only if the server cannot import it: one round trip
    first = not by_value and (address, cls) not in _proven and (_child is None or address != _child.address)
    if first:
        client.node.connect(address)  # the handshake runs while the class is pickled
    fallback = _byvalue.fallback(cls) if first else None
    while True:
        fut = _send_create(client, address, cls, args, kwargs, object_id, name, detached, attrs, by_value, durable,
                           fallback)
        reply = wait(fut, None, address)
        if reply[0].get("op") == wire.ERR and reply[0].get("kind") == wire.K_NEEDCLASS and not by_value:
            by_value = True
            _by_value.add((address, cls))
            continue
        info = decode_reply(reply, address)
        break
    info = info if isinstance(info, dict) else {}
    if info.get("byvalue"):  # it could not import the class and took the fallback: by value from now on
        _by_value.add((address, cls))
    _created(client, address, info, detached)
    _proven.add((address, cls))
    _proven_cls.add(cls)
    durable_info = _durable_info(info, durable, address, None if detached else client.session)
    proxy = RpcObject(address, object_id, cls.__name__, methods, _pipeline.shared(info.get("pool")),
                      _pipeline.shared(info.get("inst")), durable_info)
    if durable_info is not None and not detached and durable_info["max_restarts"]:
        _restart.watch(proxy)
    return proxy


def _track(proxy: RpcObject, extra: tuple, fut: Any, first: bool = False) -> None:
    """Follow a pipelined creation's own reply future (a ``create``, or an object of a batch that was
    not built): :func:`mesh._pipeline.track`. ``first``: the class's first object on that server."""
    client, address, cls, args, kwargs, detached, attrs, elsewhere = extra

    def done(info: dict) -> None:
        _created(client, address, info, detached)
        if first and info.get("byvalue"):  # it took the fallback: by value from now on (before it is proven)
            _by_value.add((address, cls))
        if first:
            _proven.add((address, cls))
            _proven_cls.add(cls)

    def again() -> RpcObject:
        return create(address, cls, args, kwargs, detached=detached, attrs=attrs, object_id=proxy._mesh_id,
                      by_value=True, wait_reply=True)

    _pipeline.track(proxy, fut, f"creating {cls.__name__} on {address}", done, again, elsewhere)


def _built(client: Any, address: str, detached: bool, proxies: list, info: dict) -> None:
    """The objects of a ``create_many`` batch are built (I/O thread)."""
    _created(client, address, info, detached)
    _pipeline.built(proxies, info)


def _batched(client: Any, address: str, cls: type, args: tuple, kwargs: dict, object_id: str, detached: bool,
             attrs: dict | None, by_value: bool, proxy: RpcObject, extra: tuple) -> bool:
    """Queue a pipelined creation in a ``create_many`` batch (:mod:`mesh._create_many`); False: send
    a ``create`` (large arguments, or a server older than 1.4)."""
    if address in _create_many.old:
        return False
    try:
        if by_value:
            with _byvalue.class_by_value(cls):  # the arguments may hold instances of the module's classes
                item = _create_many.encode_item(args, kwargs, attrs)
        else:
            item = _create_many.encode_item(args, kwargs, attrs)
    except transport.CodecError as exc:
        raise cannot_send({"op": wire.CREATE, "cls": ref_of(cls)}, {"args": args, "kwargs": kwargs}, exc) from exc
    if item is None:
        return False
    if not detached:
        client.own(address)
    return _create_many.add(client, address, ref_of(cls), object_id, item, detached,
                            _byvalue.blob(cls) if by_value else None, proxy, extra, _built, _track)


def _methods(cls: type) -> dict:
    """The method table proxies of ``cls`` share (read only; one copy per class, not per proxy)."""
    table = _tables.get(cls)
    if table is None:
        table = _tables[cls] = dict(cls._mesh_methods)  # type: ignore[attr-defined]
    return table


def _durable_info(info: Any, durable: tuple[int, int] | None, address: str, sess: str | None) -> dict | None:
    if durable is None:
        return None
    fields = info.get("durable") if isinstance(info, dict) else None
    if not isinstance(fields, dict):
        raise MeshError(f"{address} does not support durable objects (checkpoint, max_restarts): upgrade it")
    return {"store": fields.get("store"), "gen": int(fields.get("gen", 0)),
            "max_restarts": int(fields.get("max_restarts", 0)), "ckpt": int(fields.get("ckpt", 0)), "sess": sess}


def child_server(*, state_store: str | None = None) -> Any:
    """The child server of this process, started on first use and reused (``state_store``: its store,
    when it starts now: to restart a durable object from that store)."""
    global _child, _child_used
    with _child_lock:  # (held by a spare's thread until its child is ready: see _start_spare)
        _child_used = True
        if _child is not None and _child._state == "running" and (_child._proc is None or _child._proc.poll() is None):
            return _child
        server = _new_child(state_store)
        server.launch(in_subprocess=True)
        _child = server
        return server


def _new_child(state_store: str | None = None) -> Any:
    st = _settings.current()
    return AgentServer(port=0, capacity=st.child_capacity, advertise=False, secret=st.secret, state_store=state_store)


def stop_child() -> None:
    global _child, _child_used
    _proven.clear()  # the next session proves each (server, class) again: a server may have restarted
    _proven_cls.clear()
    _trying.clear()
    _create_req_firsts.clear()
    _create_many.abandon()
    with _child_lock:
        server, _child = _child, None
        _child_used = False
    if server is not None:
        server.shutdown()


atexit.register(stop_child)


def child() -> Any:
    """The child server if one runs (never starts one)."""
    return _child
