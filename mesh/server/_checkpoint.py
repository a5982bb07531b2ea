"""Durable objects on a server: save a checkpoint after each completed call, restore on a restart.

An object created with ``checkpoint=True`` (header ``ckpt``: 1, or 2 for ``"best-effort"``) and/or
``max_restarts=N`` (header ``restarts``) is *durable*: at creation its ``spec`` (the ``create``
request) and activation record (generation 0, this server's address) go to the state store
(:mod:`mesh._core.state_store`), and with ``checkpoint`` its state too (version 0). After every
call that completes, on the worker (or off the event loop for a coroutine method), before the
reply is sent, its state is saved again: ``state_dict()`` when the class has one, else its public
data attributes. The write is fenced by the generation: an activation that was restarted elsewhere
meanwhile (this server was partitioned) gets ``False`` and the call's caller is told it moved.

A ``create`` with ``restore: G`` claims generation G of an existing durable object (exclusive, see
the store), rebuilds it from its spec and, with ``checkpoint``, loads its last checkpoint
(``load_state_dict()`` or the attributes). A lost claim answers ``{"moved": record}``.
"""

from __future__ import annotations

import logging
import os
import pickle
import struct
import threading
import time
from typing import TYPE_CHECKING, Any

import msgpack

import transport
from mesh._core import wire
from mesh._core.wire import Entry
from mesh._errors import CheckpointError, ServerUnavailable, StateStoreError
from mesh.server._calls import remote_error

if TYPE_CHECKING:
    from mesh._core.state_store import StateStore

# The store's modules (mesh._core.state_store, ckpt_log, stores) are imported by the first durable
# object, not by every server: a server that never hosts one does not keep them in its memory.

__all__ = ["Checkpoints", "Durable", "Moved", "NotInStore", "apply_state", "start_scan", "take_state"]

log = logging.getLogger("mesh.server")

_VERSION = struct.Struct("!QQ")  # checkpoint payload: version, generation, then the pickled state
CHECKPOINT = 1
BEST_EFFORT = 2


class Durable:
    """What a server knows of one durable object it hosts."""

    __slots__ = ("mode", "max_restarts", "gen", "version", "record", "saved_at", "bytes", "chain")

    def __init__(self, mode: int, max_restarts: int, gen: int = 0) -> None:
        self.mode = mode  # 0: no checkpoints (restart from the constructor), 1: checkpoint, 2: best effort
        self.max_restarts = max_restarts
        self.gen = gen
        self.version = -1  # the last checkpoint saved
        self.record: dict = {}
        self.saved_at = 0.0
        self.bytes = 0  # the size of the state's pickle
        from mesh._core.ckpt_log import Chain

        self.chain = Chain()  # what was saved last: the next checkpoint is a delta on it

    def row(self) -> dict[str, Any]:
        return {"checkpoint": {0: False, 1: True, 2: "best-effort"}[self.mode], "version": self.version,
                "gen": self.gen, "max_restarts": self.max_restarts, "bytes": self.bytes}


class NotInStore(StateStoreError):
    """A restore asked of a server whose store has no record of the object (answered ``notfound``)."""


class Moved(Exception):
    """Another activation of the object won: its record."""

    def __init__(self, record: dict) -> None:
        super().__init__(record.get("address"))
        self.record = record


def take_state(obj: Any) -> Any:
    """``obj.state_dict()`` when it has one, else its public data attributes."""
    fn = getattr(obj, "state_dict", None)
    if callable(fn):
        return fn()
    return {k: v for k, v in vars(obj).items() if not k.startswith("_") and not callable(v)}


def apply_state(obj: Any, state: Any) -> None:
    fn = getattr(obj, "load_state_dict", None)
    if callable(fn):
        fn(state)
        return
    for key, value in dict(state).items():
        if not str(key).startswith("_"):
            setattr(obj, key, value)


def _bytes(frame: Any) -> bytes:
    return frame.bytes if hasattr(frame, "bytes") else bytes(frame)


class Checkpoints:
    """A server's side of durable objects: its store (opened on first use), address and run."""

    def __init__(self, url: str | None, secret: bytes | None, instance: str) -> None:
        self._url = url
        self._secret = secret
        self._store: StateStore | None = None
        self._lock = threading.Lock()
        self.instance = instance
        self.address: str | None = None  # set once the server is bound
        self.restorable: list[dict] = []  # what the store held when this server started
        self._touched = time.time()

    @property
    def store(self) -> StateStore:
        if self._store is None:
            with self._lock:
                if self._store is None:
                    from mesh._core.stores import open_store

                    self._store = open_store(self._url, self._secret)
        return self._store

    def check(self) -> None:
        """A directory store named explicitly must be usable when the server starts (a Redis
        store is reported when used: it may come up later).

        Raises:
            StateStoreError: the directory cannot be made, or this server cannot write it.
        """
        url = self._url
        if not url or url.startswith(("redis://", "rediss://", "unix://")):
            return
        root = getattr(self.store, "root", None)  # opening makes the directory
        if root is not None and not os.access(root, os.W_OK | os.X_OK):
            raise StateStoreError(f"state store {root}: this server cannot write the directory")

    @property
    def opened(self) -> bool:
        return self._store is not None

    @property
    def where(self) -> str:
        return self._store.where if self._store is not None else str(self._url or "")

    @staticmethod
    def options(header: dict) -> Durable | None:
        mode, restarts = header.get("ckpt") or 0, header.get("restarts") or 0
        if not mode and not restarts:
            return None
        return Durable(int(mode), int(restarts))

    # ------------------------------------------------------------ creation
    def created(self, actor: Any, header: dict, cls_ref: str, body: Any, buffers: list) -> dict[str, Any]:
        """After the constructor (worker): spec, record of generation 0, first checkpoint.

        Raises:
            StateStoreError, CheckpointError: the object cannot be made durable (it is dropped).
        """
        try:
            return self._created(actor, cls_ref, body, buffers)
        except StateStoreError as exc:
            if actor.durable.mode != BEST_EFFORT:
                raise
            log.warning("%s object %s is not durable for now (checkpoint='best-effort'): %s", actor.cls_name, actor.id, exc)
            return {"durable": {"store": self._url, "gen": 0, "max_restarts": actor.durable.max_restarts,
                                "ckpt": BEST_EFFORT}}

    def _created(self, actor: Any, cls_ref: str, body: Any, buffers: list) -> dict[str, Any]:
        from mesh._core.state_store import seal

        d: Durable = actor.durable
        store = self.store
        spec = msgpack.packb([cls_ref, _bytes(body), [_bytes(b) for b in buffers]], use_bin_type=True)
        store.put(actor.id, "spec", seal(store.key, "spec", actor.id, spec))
        record = {
            "obj": actor.id, "cls": cls_ref, "gen": 0, "address": self.address, "inst": self.instance,
            "max_restarts": d.max_restarts, "ckpt": d.mode, "detached": actor.session is None,
            "sess": actor.session, "name": actor.name, "time": time.time(),
        }
        if not store.claim(actor.id, record):
            raise StateStoreError(f"object id {actor.id} already has a record in the state store {store.where}")
        d.record = record
        if d.mode:
            entry = self.save(actor)
            if entry is not None:
                raise CheckpointError(entry[0].get("msg", "checkpoint failed"))
        return self.reply_fields(d)

    def reply_fields(self, d: Durable) -> dict[str, Any]:
        return {"durable": {"store": self.store.url, "gen": d.gen, "max_restarts": d.max_restarts, "ckpt": d.mode}}

    # ------------------------------------------------------------ checkpoints
    def after_call(self, actor: Any, entry: Entry) -> Entry:
        """A call of a durable object ended with ``entry``: checkpoint it if it completed."""
        d: Durable | None = actor.durable
        if d is None or not d.mode or entry[0].get("op") != wire.OK:
            return entry
        problem = self.save(actor)
        return entry if problem is None else problem

    def save(self, actor: Any) -> Entry | None:
        """Save the object's state; None, or the error reply that says why it was not saved."""
        d: Durable = actor.durable
        what = f"{actor.cls_name} object {actor.id}"
        try:
            state = take_state(actor.obj)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            return _error(CheckpointError(f"checkpoint of {what} failed: state_dict() raised {type(exc).__name__}: "
                                          f"{exc}; the previous checkpoint (version {d.version}) stays"))
        try:
            import cloudpickle  # (loaded at the first checkpoint: a server without any never loads it)

            data = cloudpickle.dumps(state, protocol=5)
        except BaseException as exc:  # noqa: BLE001
            return _error(CheckpointError(f"checkpoint of {what} failed: its state cannot be pickled "
                                          f"({type(exc).__name__}: {exc}); the previous checkpoint (version {d.version}) stays"))
        store = self.store
        with d.chain.lock:  # one write at a time per object (versions in order)
            try:
                current, version, _ = d.chain.write(store, actor.id, d.gen, d.version, data)
            except StateStoreError as exc:
                if d.mode == BEST_EFFORT:
                    log.warning("checkpoint of %s not saved (checkpoint='best-effort'): %s", what, exc)
                    return None
                return _error(StateStoreError(f"checkpoint of {what} failed: {exc}; the call ran, but its effect is "
                                              "not saved (use checkpoint='best-effort' to go on without the store)"))
            if not current:
                return wire.err_entry(wire.K_UNAVAILABLE, f"{what} was restarted on another server (this activation, "
                                                          f"generation {d.gen}, is stale): call it again")
            d.version = version
        d.saved_at = time.time()
        d.bytes = len(data)
        return None

    # ------------------------------------------------------------ restore
    def restore(self, actor: Any, header: dict) -> tuple[str, dict, Any, bool]:
        """Claim generation ``header['restore']``; the spec's class and payload, and the state.

        Returns:
            ``(cls_ref, payload, state, has_state)``.

        Raises:
            Moved: another activation won (or had won already).
            ServerUnavailable: ``max_restarts`` is used up.
            StateStoreError: the store is down, or the spec or the checkpoint is corrupted.
        """
        store = self.store
        gen = int(header["restore"])
        record = store.record(actor.id)
        if record is None:
            raise NotInStore(f"object {actor.id} has no record in the state store {store.where}: it was deleted, "
                                  "or this server does not share the store of the server that made it")
        if record.get("error"):
            raise StateStoreError(str(record["error"]))
        if record.gen >= gen:
            raise Moved(record)
        if gen > int(record.get("max_restarts", 0)):
            raise ServerUnavailable(f"object {actor.id} ({record.get('cls')}) was restarted {record.gen} times already: "
                                    f"max_restarts={record.get('max_restarts', 0)} is used up")
        new = {**record, "gen": gen, "address": self.address, "inst": self.instance, "time": time.time()}
        if not store.claim(actor.id, new):
            raise Moved(store.record(actor.id) or record)
        actor.durable = d = Durable(int(record.get("ckpt", 0)), int(record.get("max_restarts", 0)), gen)
        d.record = new
        try:
            from mesh._core import ckpt_log
            from mesh._core.state_store import unseal

            spec = msgpack.unpackb(unseal(store.key, "spec", actor.id, store.get(actor.id, "spec") or b"", store.where),
                                   raw=False)
            cls_ref, body, buffers = spec
            payload = transport.decode(body, buffers)
            state, has_state = None, False
            if d.mode:
                found = ckpt_log.read(store, actor.id)  # the base and its deltas: the latest complete version
                if found is not None:
                    d.version, data = found
                    state, has_state = pickle.loads(data), True
        except Exception as exc:  # noqa: BLE001 - anything wrong with what the store holds
            why = str(exc) if isinstance(exc, StateStoreError) else f"{type(exc).__name__}: {exc}"
            self.fail(actor.id, new, f"cannot restore object {actor.id} ({record.get('cls')}) from the state store "
                                     f"{store.where}: {why}")
            raise StateStoreError(new["error"]) from None
        return cls_ref, payload, state, has_state

    def fail(self, object_id: str, record: dict, why: str) -> None:
        """The restore of the claimed generation failed: say so in its record (later proxies raise it)."""
        record["error"] = why
        try:
            self.store.rewrite(record, object_id)
        except StateStoreError as exc:
            log.warning("could not mark the restore of %s as failed: %s", object_id, exc)

    def due(self) -> bool:
        """Time to refresh the records of the objects hosted here (see :meth:`touch`)."""
        return self._store is not None and time.time() - self._touched > STALE_AFTER / 4

    def touch(self, actors: list) -> None:
        """Refresh the records of the durable objects hosted here: a scan never takes them for stale."""
        self._touched = now = time.time()
        for actor in actors:
            d = actor.durable
            if d is not None and d.record:
                d.record["time"] = now
                try:
                    self.store.rewrite(d.record, actor.id)
                except StateStoreError as exc:
                    log.warning("could not refresh the record of %s: %s", actor.id, exc)

    # ------------------------------------------------------------ ends, scan
    def forget(self, actor: Any) -> None:
        """The object was deleted or its lease ended: its checkpoint is stale (worker)."""
        d: Durable | None = actor.durable
        if d is None:
            return
        try:
            record = self.store.record(actor.id)
            if record is None or record.gen == d.gen:  # not if it was restarted elsewhere meanwhile
                self.store.drop(actor.id)
        except Exception as exc:  # noqa: BLE001 - a store that is down keeps it; the next scan sees it
            log.warning("could not remove the checkpoint of %s: %s", actor.id, exc)

    def scan(self, stale_after: float) -> list[dict]:
        """What the store holds (logged at start): one row per restorable object; stale ones removed."""
        rows: list[dict] = []
        store = self.store
        now = time.time()
        for object_id in store.ids():
            try:
                record = store.record(object_id)
            except StateStoreError as exc:
                rows.append({"id": object_id, "error": str(exc)})
                continue
            if record is None:
                if getattr(store, "sweep_temp", None) is not None:
                    store.sweep_temp(object_id)
                continue
            ended = not record.get("detached") and now - float(record.get("time", now)) > stale_after
            if ended and record.get("inst") != self.instance:
                log.info("removing the stale checkpoint of %s (%s): not detached, untouched for %.0f s",
                         object_id, record.get("cls"), now - float(record.get("time", now)))
                store.drop(object_id)
                continue
            version = None
            blob, deltas = store.get_checkpoint(object_id)
            if blob is not None and len(blob) >= 36 + _VERSION.size:
                version = _VERSION.unpack_from(blob, 36)[0] + len(deltas)
            rows.append({"id": object_id, "class": str(record.get("cls", "")).rpartition(":")[2],
                         "version": version, "gen": record.gen, "address": record.get("address"),
                         "detached": bool(record.get("detached")), "error": record.get("error")})
        self.restorable = rows
        return rows


def _error(exc: BaseException) -> Entry:
    return remote_error(exc)


STALE_AFTER = 3600.0  # s: a non-detached durable object untouched this long (its creator gone) is removed


def start_scan(checkpoints: Checkpoints, lease_ttl: float) -> None:
    """At start, in the background: list what the store could restore (a log line), remove stale ones.

    Only a store that exists already is read (the default directory is not made for nothing).
    """
    url = checkpoints._url
    if url is None:
        from mesh._core.stores import default_url

        url = default_url()
        if not os.path.isdir(url):
            return
    elif not url.startswith(("redis://", "rediss://", "unix://")) and not os.path.isdir(url):
        return

    def run() -> None:
        try:
            rows = checkpoints.scan(max(STALE_AFTER, 10 * lease_ttl))
        except Exception as exc:  # noqa: BLE001 - a store that is down is reported when it is used
            log.warning("state store %s could not be read: %s", checkpoints.where, exc)
            return
        if rows:
            log.warning("state store %s holds %d checkpoint(s) this server could restore: %s", checkpoints.where,
                        len(rows), ", ".join(f"{r.get('class', '?')} {r['id']} v{r.get('version')}" for r in rows[:5])
                        + (" ..." if len(rows) > 5 else ""))

    threading.Thread(target=run, name="mesh-state-scan", daemon=True).start()
