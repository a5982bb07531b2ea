"""Creations held back for a server (``mesh._create_many`` keeps them: a batch waits while an earlier
one to that server is not answered). A call to that server sends them first (``_proxy._invoke``),
so the server sees creations and calls in program order."""

from __future__ import annotations

from typing import Any, Callable

held: dict[str, list[Any]] = {}  # address -> batches held for it
release: Callable[[str], None] = lambda address: None  # noqa: E731 - mesh._create_many.release_held
