"""The one place where blocking mesh calls meet asyncio.

The data path (publishes, ``send_message``, their answers) never comes here: links send from the
loop and await mesh futures directly (see ``_link.py``). What is left are the rare blocking calls
(joining and telling the directory, stopping servers), run off the loop by :func:`blocking`.
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
