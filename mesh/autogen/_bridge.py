"""The one place where blocking mesh calls meet asyncio.

Mesh futures block a thread today (``.result()``); AutoGen's API is asyncio. Everything in
``mesh.autogen`` that waits on the mesh from the event loop goes through :func:`blocking`, so that
it can become a plain ``await fut`` once mesh futures are awaitable, in one edit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["blocking", "result"]


async def blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking mesh call (a proxy's sync method, ``fut.result``) without blocking the loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def result(fut: Any, timeout: float | None = None) -> Any:
    """``await`` a mesh future (``AsyncResult``): its value, or what ``.result()`` raises."""
    return await blocking(fut.result, timeout)
