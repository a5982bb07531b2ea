"""How a server finds the class of an object it is asked to create."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Iterable
from typing import Any

from mesh._core.methods import is_rpc_class
from transport._byvalue_load import loads as load_by_value

try:  # the C module: ``hashlib`` would load OpenSSL's libcrypto too (1.5-3 MiB of a plain server's memory)
    from _blake2 import blake2b
except ImportError:  # pragma: no cover  (not CPython)
    from hashlib import blake2b

__all__ = ["AgentDirError", "ClassResolver", "load_agent_dir"]

log = logging.getLogger("mesh.server")

_MAX_BLOBS = 256  # classes sent by value kept for reuse (then forgotten, all at once)


class AgentDirError(Exception):
    """A file of ``--agent-dir`` failed to import."""


class ClassResolver:
    """Known classes first, then import by name, then (unless ``no_code``) by value.

    Args:
        classes: classes the server knows (``custom_agent_classes``, ``--agent-dir``).
        no_code: refuse classes sent by value and classes it does not know.
    """

    def __init__(self, classes: Iterable[type] = (), *, no_code: bool = False) -> None:
        self.no_code = no_code
        self._by_ref: dict[str, type] = {}
        self._by_name: dict[str, list[type]] = {}
        self._lock = threading.Lock()
        self._blobs: dict[bytes, type] = {}  # digest of a class sent by value -> the class it made
        for cls in classes:
            self.add(cls)

    def add(self, cls: type) -> None:
        self._by_ref[f"{cls.__module__}:{cls.__qualname__}"] = cls
        self._by_name.setdefault(cls.__qualname__, []).append(cls)

    def resolve(self, ref: str, blob: bytes | None) -> type | None:
        """The class for ``module:qualname`` (``blob``: the class pickled by value).

        Returns:
            the class, or ``None`` when it is unknown here and no blob came.

        Raises:
            PermissionError: ``no_code`` and the class is unknown.
            TypeError: the class is not made with ``RpcMeta``.
        """
        cls = self._known(ref)
        if cls is None and not self.no_code:
            if blob is not None:
                cls = self._by_value(blob)
            else:
                cls = _import(ref)
        if cls is None:
            if self.no_code:
                raise PermissionError(
                    f"class {ref} is not known to this server, which runs with --no-code "
                    "(only classes from --agent-dir / custom_agent_classes)"
                )
            return None
        if not is_rpc_class(cls):
            raise TypeError(f"{ref} is not a class made with mesh.RpcMeta; refusing to create it")
        return cls

    def _by_value(self, blob: bytes) -> Any:
        """Unpickle a class sent by value, once per distinct blob: the thousand objects of a
        script's class share one class object (as in one process), not one copy each."""
        key = blake2b(blob, digest_size=16).digest()
        cls = self._blobs.get(key)
        if cls is None:
            cls = load_by_value(blob)  # pickle.loads, without loading cloudpickle for it (~1.2 MiB)
            if is_rpc_class(cls):
                with self._lock:
                    if len(self._blobs) >= _MAX_BLOBS:
                        self._blobs.clear()
                    self._blobs[key] = cls
        return cls

    def _known(self, ref: str) -> type | None:
        cls = self._by_ref.get(ref)
        if cls is not None:
            return cls
        module, _, qualname = ref.partition(":")
        candidates = self._by_name.get(qualname, ())
        # A class the client runs as a script (module __main__) matches the
        # registered class of the same name, as in AgentScope's dist_server.py.
        if module == "__main__" and len(candidates) == 1:
            return candidates[0]
        return None


def _import(ref: str) -> type | None:
    module, _, qualname = ref.partition(":")
    if not module or not qualname or module == "__main__":
        return None
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception:  # not importable here: the client sends it by value
        return None
    return obj if isinstance(obj, type) else None


def load_agent_dir(path: str) -> list[type]:
    """Import every ``*.py`` file of ``path`` and return the RpcMeta classes they define.

    Raises:
        AgentDirError: the folder is missing or a file fails to import (the message names it).
    """
    if not os.path.isdir(path):
        raise AgentDirError(f"--agent-dir {path!r} is not a folder")
    path = os.path.abspath(path)
    if path not in sys.path:
        sys.path.insert(0, path)
    classes: list[type] = []
    for fname in sorted(os.listdir(path)):
        if not fname.endswith(".py") or fname.startswith("_"):
            continue
        modname = fname[:-3]
        file = os.path.join(path, fname)
        loaded = sys.modules.get(modname)
        if loaded is not None and os.path.abspath(getattr(loaded, "__file__", None) or "") != file:
            # import_module would hand back that module and never read this file
            raise AgentDirError(
                f"{file}: its module name {modname!r} is taken by {getattr(loaded, '__file__', None) or 'a built-in module'}; "
                "rename the file"
            )
        try:
            module = importlib.import_module(modname)
        except BaseException as exc:  # noqa: BLE001 - any failure names the file
            raise AgentDirError(f"{os.path.join(path, fname)}: {type(exc).__name__}: {exc}") from exc
        for value in vars(module).values():
            if is_rpc_class(value) and value.__module__ == modname:
                classes.append(value)
    return classes
