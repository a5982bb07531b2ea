"""``AgentBase``: the agent that AgentScope-style applications subclass."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, Self

from mesh._core.ids import uuid4_hex
import mesh.client._hubs as _hubs
from mesh._msg import Msg
from mesh._core.methods import STREAM, isasyncgenfunction, iscoroutinefunction, isgeneratorfunction
from mesh._rpc import RpcMeta, _to_dist, async_func, stream_func

__all__ = ["AgentBase"]


class AgentBase(metaclass=RpcMeta):
    """An agent: ``reply(x) -> Msg``, with a memory.

    Args:
        name: the agent's name.
        **kwargs: kept as attributes (``sys_prompt``, ``model_config_name``...).

    ``__call__(x)`` calls ``reply(x)``. Both are async functions: on a remote
    agent they return a :class:`~mesh.Placeholder` at once; on a local agent
    they return the ``Msg`` itself.
    """

    _mesh_agent = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        reply = cls.__dict__.get("reply")
        if callable(reply) and not getattr(reply, "_mesh_checked", False):
            cls.reply = _checked_reply(reply, cls.__name__)  # type: ignore[method-assign]
        # __call__ forwards to reply and is of its kind: a coroutine function when reply is one, so
        # `await agent(x)` works on a local agent as on a remote one (unless the class has its own)
        if getattr(cls.__call__, "_mesh_forwarder", False):
            if getattr(cls.reply, "_mesh_mode", None) == STREAM:  # a streaming reply: __call__ streams it too
                call = _agen_call if isasyncgenfunction(cls.reply) else _gen_call
                cls.__call__ = call  # type: ignore[assignment, method-assign]
                return
            is_async = iscoroutinefunction(cls.reply)
            if is_async != iscoroutinefunction(cls.__call__):
                cls.__call__ = _async_call if is_async else AgentBase.__call__  # type: ignore[assignment, method-assign]

    def __init__(self, name: str, **kwargs: Any) -> None:
        self.name = name
        self.agent_id = uuid4_hex()
        self.memory: list[Msg] = []
        for key, value in kwargs.items():
            setattr(self, key, value)

    # Typed Any: a subclass's reply returns a Msg, or (async def reply) a coroutine of one, and
    # __call__ follows it; type checkers accept both overrides and `await agent(x)`.
    @async_func
    def reply(self, x: Msg | None = None) -> Any:
        """Produce the answer to ``x`` (a ``Msg``; ``async def reply`` may be used). Subclasses override it.

        Raises:
            NotImplementedError: the subclass did not override it.
        """
        raise NotImplementedError(f"{type(self).__name__} must override reply(self, x)")

    @async_func
    def __call__(self, x: Msg | None = None, *args: Any, **kwargs: Any) -> Any:
        if _hubs.speakers:  # a participant in a msghub's with: its reply is shown to the others
            k = ("local", id(self))  # (mesh.client._hubs.key of a local agent)
            hubs = _hubs.speakers.get(k)
            if hubs is not None and k not in _hubs.speaking():
                return _hubs.speak(self, self.reply, (x, *args), kwargs, hubs)
        return self.reply(x, *args, **kwargs)

    __call__._mesh_forwarder = True  # type: ignore[attr-defined]

    def to_dist(self, host: str | None = None, port: int | str | None = None, **options: Any) -> Self:
        """Re-create this agent on an agent server and return its proxy (it behaves as the agent:
        ``reply`` / ``__call__`` return a :class:`~mesh.Placeholder`, a ``Msg``).

        See :class:`~mesh.RpcMeta` and :class:`~mesh.DistConf` for ``host``, ``port`` and the options.
        """
        return _to_dist(self, host, port, **options)

    def observe(self, x: Msg | list[Msg] | None) -> None:
        """Add ``x`` (a message or a list of them) to the memory; futures are resolved first."""
        if x is None:
            return
        x = resolve(x)
        if isinstance(x, list):
            self.memory.extend(resolve(m) for m in x)
        else:
            self.memory.append(x)

    def state_dict(self) -> dict[str, Any]:
        """The agent's state: name, id, memory (as dicts) and other public data attributes."""
        state: dict[str, Any] = {}
        for key, value in vars(self).items():
            if key.startswith("_") or callable(value):
                continue
            state[key] = value
        state["memory"] = [m.to_dict() if isinstance(m, Msg) else m for m in self.memory]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        for key, value in state.items():
            if key == "memory":
                self.memory = [Msg.from_dict(m) if isinstance(m, dict) else m for m in value]
            elif not key.startswith("_"):
                setattr(self, key, value)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


@async_func
async def _async_call(self: AgentBase, x: Msg | None = None, *args: Any, **kwargs: Any) -> Any:
    """``AgentBase.__call__`` of an agent whose ``reply`` is ``async def``."""
    return await self.reply(x, *args, **kwargs)


_async_call._mesh_forwarder = True  # type: ignore[attr-defined]
_async_call.__qualname__ = "AgentBase.__call__"


@stream_func
def _gen_call(self: AgentBase, x: Msg | None = None, *args: Any, **kwargs: Any) -> Any:
    """``AgentBase.__call__`` of an agent whose ``reply`` streams (a generator)."""
    yield from self.reply(x, *args, **kwargs)


@stream_func
async def _agen_call(self: AgentBase, x: Msg | None = None, *args: Any, **kwargs: Any) -> Any:
    """``AgentBase.__call__`` of an agent whose ``reply`` streams (an async generator)."""
    chunks = self.reply(x, *args, **kwargs)
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        await chunks.aclose()  # closed with it (a stopped stream): the reply's finally runs now


for _fn in (_gen_call, _agen_call):
    _fn._mesh_forwarder = True  # type: ignore[attr-defined]
    _fn.__qualname__ = "AgentBase.__call__"


def _not_a_msg(cls_name: str, value: Any) -> TypeError:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return TypeError(
        f"{cls_name}.reply must return a Msg, but it returned {type(value).__name__} {text}: "
        f"return e.g. Msg(self.name, content) instead"
    )


def _is_msg(value: Any) -> bool:
    if isinstance(value, Msg):
        return True
    client = sys.modules.get("mesh.client")  # no future exists in a process that never loaded the client
    return client is not None and client.is_future(value)  # a future may hold a Msg: not waited for here


def resolve(value: Any) -> Any:
    """``mesh.client.resolve`` when the client is loaded (only then can ``value`` hold a future)."""
    client = sys.modules.get("mesh.client")
    return value if client is None else client.resolve(value)


def _checked_reply(fn: Callable, cls_name: str) -> Callable:
    """Wrap a subclass's ``reply`` so that a result other than a ``Msg`` fails at once, naming the class.

    A remote agent's caller reads the result as a ``Placeholder`` (a ``Msg``): a ``str``
    would otherwise fail there as ``'str' object has no attribute 'content'``.
    """
    if isgeneratorfunction(fn) or isasyncgenfunction(fn):
        return fn  # a stream of items, not one message
    if iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def checked_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            value = await fn(self, *args, **kwargs)
            if not _is_msg(value):
                raise _not_a_msg(cls_name, value)
            return value

        checked_async._mesh_checked = True  # type: ignore[attr-defined]
        return checked_async

    @functools.wraps(fn)
    def checked(self: Any, *args: Any, **kwargs: Any) -> Any:
        value = fn(self, *args, **kwargs)
        if not _is_msg(value):
            raise _not_a_msg(cls_name, value)
        return value

    checked._mesh_checked = True  # type: ignore[attr-defined]
    return checked
