"""Durable agents' state store: checkpoints, creation specs and activation records, per object.

Two kinds, chosen by URL: a directory (``/var/lib/mesh/state``, ``file:///...``; servers on one
machine) and Redis (``redis://...``; servers on many machines, :mod:`mesh._core._state_redis`).
Both sides use it: a server saves and restores, a proxy reads where its object lives now.

What is kept for an object id:

* ``spec``: the ``create`` request that made it (class and constructor arguments), to build it again;
* ``ckpt``: its last checkpoint (version, pickled state);
* the activation record of each generation: JSON ``{"gen", "address", "inst", ...}``; generation 0
  is the first activation, each restart claims the next one. Claiming is exclusive: for the
  directory a hard link that fails if the name exists (``os.link``, like ``O_EXCL``), for Redis a
  Lua script that compares and sets the generation atomically. So of several proxies that notice
  a dead server at once, exactly one new activation wins.

Every value is sealed: ``MSS1`` + a 32-byte BLAKE2b MAC over (kind, object id, payload) + payload.
With a shared secret the MAC is keyed (a key derived from the secret), checked before anything is
unpickled: whoever can write to the store cannot make a server run code. Without one it is a
checksum: a torn or altered value is refused with a clear error all the same.

Directory writes are atomic: a temporary file, ``fsync``, ``rename`` over the old one, ``fsync``
of the directory. A SIGKILL mid-write leaves the previous value whole (and a stray temporary file
that the next scan removes). Checkpoint deltas are appended to ``log.<base version>`` (a length,
then the sealed delta; one ``write``, then ``fdatasync``): a torn last frame is a write that never
completed (its call was not answered) and is left out. ``fsync=False`` (URL ``PATH?fsync=0``)
skips every fsync: writes still survive a SIGKILL of the server (the kernel holds them), not a
power cut or a kernel crash (the last checkpoints may then be lost, never torn).
"""

from __future__ import annotations

import json
import os
import re
import struct
import threading
import time

from mesh._errors import StateStoreError

try:  # the C module: ``hashlib`` would load OpenSSL's libcrypto too (1.5-3 MiB of a plain server's memory)
    from _blake2 import blake2b
except ImportError:  # pragma: no cover  (not CPython)
    from hashlib import blake2b
try:
    from _operator import _compare_digest as compare_digest  # what hmac.compare_digest is, without hmac's OpenSSL
except ImportError:  # pragma: no cover  (not CPython)
    from hmac import compare_digest

__all__ = ["DirectoryStore", "Record", "StateStore", "StateStoreError", "check_id", "seal", "state_key", "unseal"]

_MAGIC = b"MSS1"
_MAC = 32
_FRAME = struct.Struct("!I")  # a delta in a directory log: its length, then the sealed delta
_FRAME_BASE = struct.Struct("!Q")  # the version at the start of a base's payload
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")  # never "." or ".." (no leading dot)


def state_key(secret: bytes | None) -> bytes:
    """The MAC key of sealed values ('' without a secret: a plain checksum)."""
    if not secret:
        return b""
    return blake2b(secret, digest_size=32, person=b"zmq-agent-mesh", salt=b"state-store").digest()


def _mac(key: bytes, kind: str, object_id: str, payload: bytes | memoryview) -> bytes:
    m = blake2b(key=key, digest_size=_MAC, person=b"mesh-state")
    m.update(f"{kind}\0{object_id}\0".encode())
    m.update(payload)
    return m.digest()


def seal(key: bytes, kind: str, object_id: str, payload: bytes) -> bytes:
    return b"".join((_MAGIC, _mac(key, kind, object_id, payload), payload))


def unseal(key: bytes, kind: str, object_id: str, blob: bytes, where: str) -> bytes:
    """The payload of a sealed value, or :class:`StateStoreError` (checked before any unpickling)."""
    if len(blob) < len(_MAGIC) + _MAC or blob[:4] != _MAGIC:
        raise StateStoreError(f"the {kind} of object {object_id} in the state store {where} is corrupted "
                              f"({len(blob)} bytes, not a sealed value): refused")
    payload = blob[4 + _MAC:]
    if not compare_digest(blob[4:4 + _MAC], _mac(key, kind, object_id, payload)):
        why = "not signed with this mesh's secret, or tampered with" if key else "checksum mismatch (truncated or altered)"
        raise StateStoreError(f"the {kind} of object {object_id} in the state store {where} is corrupted: {why}: refused")
    return payload


def _frames(log: bytes) -> list[bytes]:
    """The deltas in a directory log; a torn last frame (a killed writer) is left out."""
    out, pos, n = [], 0, len(log)
    while pos + _FRAME.size <= n:
        size = _FRAME.unpack_from(log, pos)[0]
        if pos + _FRAME.size + size > n:
            break
        out.append(log[pos + _FRAME.size:pos + _FRAME.size + size])
        pos += _FRAME.size + size
    return out


class Record(dict):
    """An activation record: ``gen``, ``address``, ``inst``, ``cls``, ``max_restarts``, ``ckpt``,
    ``detached``, ``sess``, and ``error`` when its restore failed."""

    @property
    def gen(self) -> int:
        return int(self.get("gen", 0))


def check_id(object_id: str) -> str:
    if not isinstance(object_id, str) or not _SAFE_ID.match(object_id):
        raise StateStoreError(f"object id {object_id!r:.80} cannot name a durable object (letters, digits, '-', '_' and '.', not first)")
    return object_id


class StateStore:
    """The operations both kinds provide (values are sealed by the caller, except records)."""

    url: str
    where: str  # the URL for messages (a password masked)
    key: bytes = b""

    # -- raw values (spec, ckpt) --------------------------------------------------------------
    def put(self, object_id: str, kind: str, blob: bytes) -> None:
        raise NotImplementedError

    def get(self, object_id: str, kind: str) -> bytes | None:
        raise NotImplementedError

    def put_fenced(self, object_id: str, kind: str, blob: bytes, gen: int) -> bool:
        """Write ``blob`` only while generation ``gen`` is the current activation (False: it moved on)."""
        raise NotImplementedError

    # -- checkpoints: a base and the deltas after it (mesh._core.ckpt_log) ---------------------
    def put_checkpoint(self, object_id: str, blob: bytes, gen: int, version: int) -> bool:
        """Write a new base (version ``version``), dropping the deltas of the previous one; fenced by ``gen``."""
        raise NotImplementedError

    def append_delta(self, object_id: str, blob: bytes, gen: int, base: int) -> bool:
        """Add a delta after base ``base``; fenced by ``gen``."""
        raise NotImplementedError

    def get_checkpoint(self, object_id: str) -> tuple[bytes | None, list[bytes]]:
        """The base and its deltas, in order, as one consistent snapshot."""
        raise NotImplementedError

    def fence(self, object_id: str, gen: int) -> bool:
        """Whether generation ``gen`` is still the current activation (or there is no record)."""
        raise NotImplementedError

    # -- activation records -------------------------------------------------------------------
    def _claim(self, object_id: str, gen: int, blob: bytes) -> bool:
        raise NotImplementedError

    def _current(self, object_id: str) -> bytes | None:
        raise NotImplementedError

    def _rewrite(self, object_id: str, gen: int, blob: bytes) -> None:
        raise NotImplementedError

    def drop(self, object_id: str) -> None:
        raise NotImplementedError

    def ids(self) -> list[str]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    # -- shared -------------------------------------------------------------------------------
    def claim(self, object_id: str, record: dict) -> bool:
        """Make ``record`` (its ``gen``) the current activation if no one claimed that generation first."""
        gen = int(record["gen"])
        return self._claim(check_id(object_id), gen, self._seal_record(object_id, record))

    def rewrite(self, record: dict, object_id: str) -> None:
        """Change the current record of its own generation (e.g. to say its restore failed)."""
        self._rewrite(check_id(object_id), int(record["gen"]), self._seal_record(object_id, record))

    def record(self, object_id: str) -> Record | None:
        blob = self._current(check_id(object_id))
        if blob is None:
            return None
        payload = unseal(self.key, "record", object_id, blob, self.where)
        try:
            value = json.loads(payload)
            if not isinstance(value, dict) or type(value.get("gen")) is not int:
                raise ValueError("not a record")
        except ValueError as exc:
            raise StateStoreError(f"the record of object {object_id} in the state store {self.where} is malformed: {exc}") from None
        return Record(value)

    def _seal_record(self, object_id: str, record: dict) -> bytes:
        return seal(self.key, "record", object_id, json.dumps(record, sort_keys=True).encode())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


class DirectoryStore(StateStore):
    """The store in a directory: ``ROOT/<object id>/{spec,ckpt,act.<gen>}``."""

    def __init__(self, path: str, key: bytes = b"", fsync: bool = True) -> None:
        self.root = os.path.abspath(os.path.expanduser(path))
        self.where = self.root
        self.url = self.root if fsync else self.root + "?fsync=0"
        self.key = key
        self.fsync = fsync
        try:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StateStoreError(f"state store {self.root}: cannot create the directory: {exc}") from None

    def _dir(self, object_id: str, make: bool = False) -> str:
        path = os.path.join(self.root, check_id(object_id))
        if make:
            try:
                os.makedirs(path, mode=0o700, exist_ok=True)
            except OSError as exc:
                raise StateStoreError(f"state store {self.root}: cannot write object {object_id}: {exc}") from None
        return path

    def _write_temp(self, folder: str, blob: bytes) -> str:
        tmp = os.path.join(folder, f".tmp.{os.getpid()}.{threading.get_ident()}.{os.urandom(4).hex()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view):]
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        return tmp

    def _sync_dir(self, folder: str) -> None:
        if not self.fsync:
            return
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _replace(self, object_id: str, name: str, blob: bytes) -> None:
        folder = self._dir(object_id, make=True)
        try:
            tmp = self._write_temp(folder, blob)
            os.replace(tmp, os.path.join(folder, name))
            self._sync_dir(folder)
        except OSError as exc:
            raise StateStoreError(f"state store {self.root}: cannot write the {name} of object {object_id}: {exc}") from None

    def put(self, object_id: str, kind: str, blob: bytes) -> None:
        self._replace(object_id, kind, blob)

    def get(self, object_id: str, kind: str) -> bytes | None:
        try:
            with open(os.path.join(self._dir(object_id), kind), "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateStoreError(f"state store {self.root}: cannot read the {kind} of object {object_id}: {exc}") from None

    def _gens(self, object_id: str) -> list[int]:
        try:
            names = os.listdir(self._dir(object_id))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StateStoreError(f"state store {self.root}: cannot read object {object_id}: {exc}") from None
        return sorted(int(n[4:]) for n in names if n.startswith("act.") and n[4:].isdigit())

    def put_fenced(self, object_id: str, kind: str, blob: bytes, gen: int) -> bool:
        # check, then write: a restart that claims between the two loses at most this one
        # checkpoint of the old activation, which its caller then no longer reads (it moved)
        gens = self._gens(object_id)
        if gens and gens[-1] != gen:
            return False
        self._replace(object_id, kind, blob)
        return True

    def fence(self, object_id: str, gen: int) -> bool:
        gens = self._gens(object_id)
        return not gens or gens[-1] == gen

    def put_checkpoint(self, object_id: str, blob: bytes, gen: int, version: int) -> bool:
        if not self.put_fenced(object_id, "ckpt", blob, gen):
            return False
        folder = self._dir(object_id)
        try:
            for name in os.listdir(folder):  # the deltas of older bases (a new base has none yet)
                if name.startswith("log."):
                    os.unlink(os.path.join(folder, name))
        except OSError:
            pass  # left for the next base; never read (a log belongs to the base its name says)
        return True

    def append_delta(self, object_id: str, blob: bytes, gen: int, base: int) -> bool:
        if not self.fence(object_id, gen):
            return False
        folder = self._dir(object_id, make=True)
        path = os.path.join(folder, f"log.{base:012d}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                created = os.fstat(fd).st_size == 0
                view = memoryview(_FRAME.pack(len(blob)) + blob)
                while view:
                    view = view[os.write(fd, view):]
                if self.fsync:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
            if created:
                self._sync_dir(folder)
        except OSError as exc:
            raise StateStoreError(f"state store {self.root}: cannot write a checkpoint of object {object_id}: {exc}") from None
        return True

    def get_checkpoint(self, object_id: str) -> tuple[bytes | None, list[bytes]]:
        for _ in range(5):  # a new base between reading the base and its log: read again
            base = self.get(object_id, "ckpt")
            if base is None:
                return None, []
            version = _FRAME_BASE.unpack_from(base, 4 + _MAC)[0] if len(base) >= 4 + _MAC + 8 else 0
            log = self.get(object_id, f"log.{version:012d}") or b""
            if self.get(object_id, "ckpt") == base:
                return base, _frames(log)
        raise StateStoreError(f"state store {self.root}: the checkpoint of object {object_id} keeps changing while read")

    def _claim(self, object_id: str, gen: int, blob: bytes) -> bool:
        folder = self._dir(object_id, make=True)
        gens = self._gens(object_id)
        if (gens[-1] if gens else -1) != gen - 1:
            return False
        try:
            tmp = self._write_temp(folder, blob)
            try:
                os.link(tmp, os.path.join(folder, f"act.{gen:08d}"))  # exclusive: fails if it exists
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
            self._sync_dir(folder)
        except OSError as exc:
            raise StateStoreError(f"state store {self.root}: cannot claim object {object_id}: {exc}") from None
        for old in gens[:-1]:  # keep the previous record, drop older ones
            try:
                os.unlink(os.path.join(folder, f"act.{old:08d}"))
            except OSError:
                pass
        return True

    def _current(self, object_id: str) -> bytes | None:
        for gen in reversed(self._gens(object_id)):
            blob = self.get(object_id, f"act.{gen:08d}")
            if blob is not None:
                return blob
        return None

    def _rewrite(self, object_id: str, gen: int, blob: bytes) -> None:
        self._replace(object_id, f"act.{gen:08d}", blob)

    def drop(self, object_id: str) -> None:
        import shutil  # here: it pulls in bz2, lzma and zlib, which a plain server never needs

        shutil.rmtree(self._dir(object_id), ignore_errors=True)

    def ids(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.root) if _SAFE_ID.match(n))
        except OSError as exc:
            raise StateStoreError(f"state store {self.root}: cannot list it: {exc}") from None

    def sweep_temp(self, object_id: str, older_than: float = 60.0) -> None:
        """Remove temporary files a killed writer left behind."""
        folder = self._dir(object_id)
        try:
            for name in os.listdir(folder):
                path = os.path.join(folder, name)
                if name.startswith(".tmp.") and time.time() - os.stat(path).st_mtime > older_than:
                    os.unlink(path)
        except OSError:
            pass
