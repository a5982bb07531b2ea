"""The local registry: same-host discovery through files, no multicast needed.

One JSON file per server (the format of :mod:`discovery._record`) in a per-user
directory: ``MESH_REGISTRY_DIR`` if set, else
``${XDG_RUNTIME_DIR or /tmp}/zmq-agent-mesh-<uid>/servers/<netns-inode>/``. The
network-namespace inode keeps virtual hosts that share a filesystem apart: a
server's ``127.0.0.1`` is only reachable from its own namespace.

Files are written atomically (temporary file, then rename) with mode 0600 in a
0700 directory. Readers drop entries whose process is gone (dead, zombie, or a
pid reused by another process, told apart by the start time) and delete their
files; malformed files are skipped.

Readers trust only what this user wrote: a registry directory (and, in the
default layout, its per-user root) or an entry file that another user owns, or
that its group or others may write, is ignored, with one warning per path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import stat
from pathlib import Path

from discovery._record import ServerRecord, record_from_dict, record_to_dict

__all__ = ["LocalRegistry", "default_registry_dir", "process_alive", "process_start_time"]

log = logging.getLogger("discovery")

_MAX_FILE = 64 * 1024  # bytes; a registry entry is ~300
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_WARNED: set[tuple[str, str]] = set()  # (path, why) already warned about: one warning each


def _untrusted(st: os.stat_result) -> str | None:
    """Why a registry path with this stat must not be trusted, or None."""
    if st.st_uid != os.getuid():
        return f"owned by uid {st.st_uid}, not by this user (uid {os.getuid()})"
    if stat.S_IMODE(st.st_mode) & 0o022:
        return f"writable by {'others' if st.st_mode & 0o002 else 'its group'} (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _warn_once(path: str, why: str) -> None:
    if (path, why) not in _WARNED:
        _WARNED.add((path, why))
        log.warning("ignoring local registry %s: %s", path, why)


def default_registry_dir() -> Path:
    """The registry directory for this user and network namespace (see the module docstring)."""
    env = os.environ.get("MESH_REGISTRY_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_RUNTIME_DIR") or ""
    if not os.path.isdir(base):  # unset, or set to something that is not there (e.g. after su)
        base = "/tmp"
    try:
        netns = str(os.stat("/proc/self/ns/net").st_ino)
    except OSError:  # no /proc (not Linux): one namespace
        netns = "default"
    return Path(base) / f"zmq-agent-mesh-{os.getuid()}" / "servers" / netns


def _read_stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()  # fields 3.. (the command name may hold spaces)


def process_start_time(pid: int) -> int:
    """The start time of ``pid`` in clock ticks since boot (0 when unknown)."""
    fields = _read_stat(pid)
    try:
        return int(fields[19]) if fields else 0  # field 22 of /proc/<pid>/stat
    except (IndexError, ValueError):
        return 0


def process_alive(pid: int, start: int = 0) -> bool:
    """``pid`` runs and is the same process that had start time ``start`` (0: don't check).

    A zombie counts as dead: a killed child that nobody reaped yet serves nothing.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    fields = _read_stat(pid)
    if fields is None:
        return True  # no /proc: os.kill is all we know
    if fields and fields[0] in ("Z", "X"):
        return False
    if start:
        try:
            return int(fields[19]) == start
        except (IndexError, ValueError):
            return True
    return True


def _makedirs_private(path: Path) -> None:
    """``mkdir -p`` where every directory created gets mode 0700 (not only the last one)."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for p in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(p, 0o700)


def _secure_dir(path: Path, default_layout: bool) -> None:
    """Create ``path`` (0700) and refuse a per-user root that another user owns or that is a symlink."""
    if default_layout:
        # default layout: <base>/zmq-agent-mesh-<uid>/servers/<ns>; the first part sits in a shared /tmp
        root = path.parent.parent
        with contextlib.suppress(FileExistsError):
            os.mkdir(root, 0o700)
        st = os.lstat(root)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise PermissionError(f"{root} is not a directory owned by uid {os.getuid()}: refusing to use it")
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(root, 0o700)
    _makedirs_private(path)


class LocalRegistry:
    """One directory of server entries.

    Args:
        directory: where entries live; :func:`default_registry_dir` when ``None``
            (read when the registry is made, so the environment of that moment counts).
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self._default_layout = directory is None and not os.environ.get("MESH_REGISTRY_DIR")
        self.directory = Path(directory) if directory is not None else default_registry_dir()

    def publish(self, rec: ServerRecord) -> Path:
        """Write ``rec`` as this process's entry; returns the file's path.

        Raises:
            OSError: the directory cannot be created or written.
        """
        pid = os.getpid()
        stem = f"{_UNSAFE.sub('_', rec.name)[:64]}-{pid}-{rec.port}"
        final = self.directory / f"{stem}.json"
        tmp = self.directory / f".{stem}.{os.urandom(4).hex()}.tmp"
        data = json.dumps(record_to_dict(rec, start=process_start_time(pid))).encode()
        for attempt in (1, 2):
            _secure_dir(self.directory, self._default_layout)
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                break
            except FileNotFoundError:  # the last server of this directory removed it just now
                if attempt == 2:
                    raise
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return final

    def withdraw(self, path: Path) -> None:
        """Remove an entry written by :meth:`publish` (missing is fine).

        In the default layout, the per-namespace directory goes too once empty, so
        that namespaces used once (tests, containers) leave nothing behind.
        """
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove local registry entry %s: %s", path, exc)
            return
        if self._default_layout:
            with contextlib.suppress(OSError):  # not empty (ENOTEMPTY), or gone already
                path.parent.rmdir()

    def records(self) -> list[ServerRecord]:
        """The entries of live servers; stale entries are deleted, malformed ones skipped."""
        try:
            if not self._trusted_dir():
                return []
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.debug("cannot list local registry %s: %s", self.directory, exc)
            return []
        out = []
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.endswith(".json"):
                continue
            try:
                if not entry.is_file(follow_symlinks=False) or entry.stat().st_size > _MAX_FILE:
                    raise ValueError("not a regular file of sane size")
                why = _untrusted(entry.stat(follow_symlinks=False))
                if why is not None:
                    _warn_once(entry.path, why)
                    continue
                with open(entry.path, "rb") as fh:
                    data = json.loads(fh.read(_MAX_FILE + 1))
                rec = record_from_dict(data, "local")
                start = data.get("start", 0)
                if rec.pid <= 0 or not isinstance(start, int):
                    raise ValueError("no pid")
            except FileNotFoundError:
                continue  # withdrawn while we listed
            except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError; deep nesting
                log.debug("ignoring malformed local registry entry %s: %s", entry.path, exc)
                continue
            if not process_alive(rec.pid, start):
                log.debug("removing stale local registry entry %s (pid %d is gone)", entry.path, rec.pid)
                self.withdraw(Path(entry.path))
                continue
            out.append(rec)
        return out

    def _trusted_dir(self) -> bool:
        """The directory (and the per-user root of the default layout) is this user's alone.

        Raises:
            FileNotFoundError: the directory does not exist (an empty registry).
        """
        paths = [self.directory]
        if self._default_layout:
            paths += [self.directory.parent, self.directory.parent.parent]  # .../servers, the per-user root
        for path in paths:
            st = os.stat(path)
            why = _untrusted(st) or (None if stat.S_ISDIR(st.st_mode) else "not a directory")
            if why is None and path != self.directory and os.path.islink(path):
                why = "a symbolic link"
            if why is not None:
                _warn_once(str(path), why)
                return False
        return True
