"""Which agents are in the ``with`` block of a message hub (``mesh.msghub``), so that calling one of
them directly, ``agent(x)``, is shown to the others as AgentScope's audience does.

``speakers`` maps an agent's key (:func:`key`) to the hubs it speaks in; empty outside every hub, so
a proxy's ``__call__`` pays one dict truth test. The hubs themselves live in ``mesh._hub``: here
``mesh._hub`` sets :data:`speak`, which makes the call and shows its reply.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

__all__ = ["HubCall", "key", "speak", "speakers", "speaking"]

speakers: dict[Any, list[Any]] = {}


def _unset(agent: Any, call: Any, args: tuple, kwargs: dict, hubs: list[Any]) -> Any:  # pragma: no cover
    return call(*args, **kwargs)  # speakers is empty until mesh._hub, which sets speak, fills it


# speak(agent, call, args, kwargs, hubs) -> the reply (set by mesh._hub, which fills speakers)
speak: Callable[[Any, Any, tuple, dict, list[Any]], Any] = _unset


_local = threading.local()


def speaking() -> set[Any]:
    """The keys of the agents this thread is making speak now (their own call is not hooked again)."""
    keys = getattr(_local, "keys", None)
    if keys is None:
        keys = _local.keys = set()
    return keys


def key(agent: Any) -> Any:
    """A proxy's object id (equal proxies of one object share it), else the local object's identity."""
    try:
        return ("remote", object.__getattribute__(agent, "_mesh_id"))
    except AttributeError:
        return ("local", id(agent))


class HubCall:
    """``proxy.__call__`` of a participant inside a hub: the call, then its reply shown to the others."""

    __slots__ = ("_agent", "_call", "_hubs")

    def __init__(self, agent: Any, call: Any, hubs: list[Any]) -> None:
        self._agent, self._call, self._hubs = agent, call, hubs

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return speak(self._agent, self._call, args, kwargs, self._hubs)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return speak(self._agent, self._call.remote, args, kwargs, self._hubs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)
