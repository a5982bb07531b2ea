"""Durable objects, caller side: follow an object that moved, and restart one whose server died.

A proxy of a durable object (``checkpoint=True`` and/or ``max_restarts=N``) carries its state
store's URL, its ``max_restarts`` and the generation of the activation it talks to. When a call
fails because that server is gone (``ServerUnavailable``, or ``AgentNotFound`` from a server that
restarted), the proxy reads the object's activation record in the store:

* a newer generation (someone restarted it already): the proxy follows it;
* the same generation: this proxy asks a live server (discovered, else the child server: the
  :data:`placer` that ``mesh._placement`` installs) to claim the next generation and rebuild the
  object from its last checkpoint. A claim is exclusive in the store, so when several proxies
  in several processes notice at once, one wins and the others are told where it went.

The call that was running when the server died fails with ``ServerUnavailable`` (it may have run:
its effect is not in any checkpoint); a call that never reached the server is sent again to the
new activation. What a process learned is shared by all its proxies of the object (:data:`_known`).
The creator of a non-detached object keeps a lease on wherever it went (:func:`_watch`).
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from typing import Any, Callable

from mesh._core import runtime, settings as _settings, wire
from mesh._core.stores import open_store
from mesh._errors import AgentNotFound, OutcomeUnknown, ServerUnavailable, StateStoreError
from mesh.client._client import get_client
from mesh.client._replies import decode_reply, wait

__all__ = ["call", "deleted", "failed", "placer", "prepare", "watch"]

log = logging.getLogger("mesh")

# (excluded addresses, store URL) -> the address of a live server to restart an object on; set by mesh._placement
placer: Callable[[set[str], str | None], str] | None = None

_known: dict[str, tuple[int, str, Any]] = {}  # object id -> (gen, address, inst): the newest this process knows
_suspect: dict[str, str] = {}  # object id -> the address whose server failed it
_locks: dict[str, threading.Lock] = {}
_deleted: set[str] = set()  # objects this process deleted (mesh.delete): AgentNotFound, never a restart
_lock = threading.Lock()
_ATTEMPTS = 4  # servers tried for one restart


def _object_lock(object_id: str) -> threading.Lock:
    with _lock:
        return _locks.setdefault(object_id, threading.Lock())


def _adopt(proxy: Any, gen: int, address: str, inst: Any) -> None:
    d = proxy._mesh_durable
    object.__setattr__(proxy, "_mesh_address", address)
    object.__setattr__(proxy, "_mesh_inst", inst)
    d["gen"] = gen
    known = _known.get(proxy._mesh_id)
    if known is None or known[0] <= gen:
        _known[proxy._mesh_id] = (gen, address, inst)
    if d.get("sess") and d.get("sess") == get_client().session:
        get_client().own(address)  # the creator: its lease keeps the restored object alive


def deleted(object_id: str) -> None:
    """``mesh.delete`` deleted it: its proxies get ``AgentNotFound`` from now on, as a plain object's do."""
    _deleted.add(object_id)
    _suspect.pop(object_id, None)


def prepare(proxy: Any) -> None:
    """Before a call: follow what this process knows, or restart the object if its server failed."""
    if proxy._mesh_id in _deleted:
        raise AgentNotFound(f"{proxy!r} was deleted (mesh.delete)")
    known = _known.get(proxy._mesh_id)
    if known is not None and known[0] > proxy._mesh_durable["gen"]:
        _adopt(proxy, *known)
    failed_at = _suspect.get(proxy._mesh_id)
    if failed_at is not None:
        recover(proxy, failed_at)


def failed(proxy: Any, address: str) -> None:
    """A call to ``address`` failed as if its server were gone: the next call recovers first."""
    if proxy._mesh_address == address:
        _suspect[proxy._mesh_id] = address


def call(proxy: Any, send: Callable[[], Any]) -> Any:
    """Run ``send()`` (a sync request to the proxy's current address) with recovery around it."""
    prepare(proxy)
    for attempt in range(2):
        address = proxy._mesh_address
        try:
            return send()
        except (ServerUnavailable, AgentNotFound) as exc:
            failed(proxy, address)
            if isinstance(exc, OutcomeUnknown) or attempt:
                raise  # it may have run there: this call fails, once; the next one reaches the restored object
            try:
                recover(proxy, address)
            except ServerUnavailable:
                if isinstance(exc, AgentNotFound):  # its server answered (it lives): the object is what is gone
                    raise exc from None
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def recover(proxy: Any, failed_at: str) -> None:
    """Point ``proxy`` at the object's current activation, restarting it if needed.

    Raises:
        ServerUnavailable: ``max_restarts`` is used up, the object is gone, or no server can take it.
        StateStoreError: the store is down, or the object's restore failed (its record says why).
    """
    object_id = proxy._mesh_id
    d = proxy._mesh_durable
    with _object_lock(object_id):
        known = _known.get(object_id)
        if known is not None and known[0] > d["gen"]:
            _adopt(proxy, *known)
        if _suspect.get(object_id) != failed_at and proxy._mesh_address != failed_at:
            return  # another thread of this process recovered it meanwhile
        store = open_store(d["store"], _settings.current().secret)
        record = store.record(object_id)
        if record is None:
            _suspect.pop(object_id, None)
            raise ServerUnavailable(f"{proxy!r}: its server is gone and the state store {store.where} has no record "
                                    "of it (it was deleted)")
        if record.get("error"):
            raise StateStoreError(str(record["error"]))
        if record.gen > d["gen"] or (record.get("inst") != proxy._mesh_inst and record.get("address") != failed_at):
            _adopt(proxy, record.gen, str(record["address"]), record.get("inst"))
            _suspect.pop(object_id, None)
            return
        limit = int(record.get("max_restarts", 0))
        if record.gen >= limit:
            raise ServerUnavailable(f"{proxy!r}: its server {failed_at} is gone, and the object was restarted "
                                    f"{record.gen} time(s) already: max_restarts={limit} is used up")
        gen, address, inst = _restart(proxy, record, {failed_at})
        _adopt(proxy, gen, address, inst)
        _suspect.pop(object_id, None)


def _restart(proxy: Any, record: dict, excluded: set[str]) -> tuple[int, str, Any]:
    if placer is None:  # a server process loads placement (a layer above) only when first needed
        importlib.import_module("mesh._placement")  # installs placer
    if placer is None:  # pragma: no cover
        raise ServerUnavailable(f"{proxy!r}: cannot restart it: no placement here")
    client = get_client()
    last: BaseException | None = None
    for _ in range(_ATTEMPTS):
        address = placer(excluded, proxy._mesh_durable.get("store"))
        header: dict[str, Any] = {"op": wire.CREATE, "obj": proxy._mesh_id, "cls": record["cls"],
                                  "restore": record["gen"] + 1}
        if record.get("detached"):
            header["detached"] = 1
        elif record.get("sess"):
            header["sess"] = record["sess"]  # it stays its creator's
        if record.get("name"):
            header["name"] = record["name"]
        started = time.monotonic()
        try:
            fut = client.request(address, header, None, timeout=client.settings.call_timeout)
            info = decode_reply(wait(fut, None, address), address)
        except (ServerUnavailable, AgentNotFound) as exc:  # gone too, or it does not share the store
            excluded.add(address)
            last = exc
            continue
        if not isinstance(info, dict):
            raise ServerUnavailable(f"{address}: malformed reply to a restore: {type(info).__name__}")
        moved = info.get("moved")
        if isinstance(moved, dict):  # another proxy's claim won: follow it
            return int(moved["gen"]), str(moved["address"]), moved.get("inst")
        log.info("restarted %r on %s (generation %d) in %.3f s", proxy, address, record["gen"] + 1,
                 time.monotonic() - started)
        limit = info.get("max_message_size")
        if isinstance(limit, int):
            client.peers.set_limit(address, limit)
        return record["gen"] + 1, address, info.get("inst")
    raise ServerUnavailable(f"{proxy!r}: its server is gone and no live server could restart it: {last}")


# ------------------------------------------------------------------ the creator's leases
_watched: dict[str, dict] = {}  # object id -> its durable info (non-detached objects this process created)
_watcher: threading.Thread | None = None
WATCH_EVERY = 5.0  # s: how often the creator looks where its restartable objects live now


def watch(proxy: Any) -> None:
    """The creator of a non-detached restartable object: keep a lease wherever it is restarted."""
    global _watcher
    with _lock:
        _watched[proxy._mesh_id] = proxy._mesh_durable
        if _watcher is None or not _watcher.is_alive():
            _watcher = threading.Thread(target=_watch_loop, name="mesh-durable-watch", daemon=True)
            _watcher.start()


def unwatch(object_id: str) -> None:
    with _lock:
        _watched.pop(object_id, None)


def _watch_loop() -> None:
    while True:
        time.sleep(WATCH_EVERY)
        with _lock:
            items = list(_watched.items())
        if not items or runtime.current(create=False) is None:  # never starts a client (mesh.shutdown())
            continue
        client = get_client()
        for object_id, d in items:
            try:
                record = open_store(d["store"], _settings.current().secret).record(object_id)
            except Exception as exc:  # noqa: BLE001 - the store may be down for a while
                log.debug("cannot read the record of %s: %s", object_id, exc)
                continue
            if record is None:
                unwatch(object_id)
                continue
            known = _known.get(object_id)
            if known is None or record.gen > known[0]:
                _known[object_id] = (record.gen, str(record.get("address")), record.get("inst"))
                client.own(str(record.get("address")))
