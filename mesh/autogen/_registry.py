"""This worker's agents: factories and instances per agent type, and lazy creation, one per AgentId."""

from __future__ import annotations

import asyncio
import inspect
import warnings
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from autogen_core import Agent, AgentId, AgentInstantiationContext, AgentType

__all__ = ["Registry"]

T = TypeVar("T", bound=Agent)


class Registry:
    """Agent types registered on this worker and the agents made so far (``runtime`` is what they bind to)."""

    def __init__(self, runtime: Any) -> None:
        self._runtime = runtime
        self.factories: dict[str, Callable[[], Awaitable[Agent]]] = {}
        self.instance_types: dict[str, type] = {}
        self.agents: dict[AgentId, Agent] = {}
        self._creating: dict[AgentId, asyncio.Future] = {}
        self.states: Any = None  # ._durable.AgentStates when the worker has a state store

    def holds(self, agent_id: AgentId) -> bool:
        """Whether this worker can serve ``agent_id`` (its type is registered, or it is an instance here)."""
        return agent_id.type in self.factories or agent_id in self.agents

    def add_factory(self, agent_type: AgentType, agent_factory: Callable[[], T | Awaitable[T]],
                    expected_class: type[T] | None) -> None:
        if agent_type.type in self.factories:
            raise ValueError(f"Agent with type {agent_type} already exists.")

        async def factory_wrapper() -> T:
            made = agent_factory()
            if inspect.isawaitable(made):
                made = await made
            if expected_class is not None and not isinstance(made, expected_class):
                raise ValueError(
                    f"Factory registered using the wrong type: expected {expected_class.__name__}, "
                    f"got {made.__class__.__name__}"
                )
            return made  # type: ignore[return-value]

        self.factories[agent_type.type] = factory_wrapper

    async def add_instance(self, agent_instance: Agent, agent_id: AgentId,
                           announce: Callable[[str, Any], Awaitable[None]]) -> None:
        """Bind ``agent_instance`` as ``agent_id``; a type new on this worker is ``announce``d first."""
        def agent_factory() -> Agent:
            # the id asked for (not ``agent_id``, the first instance's): get() runs this in its context
            wanted = AgentInstantiationContext.current_agent_id()
            raise RuntimeError(f"agent type {wanted.type!r} is registered as instances only; "
                               f"no instance was registered as {wanted}")

        if agent_id in self.agents:
            raise ValueError(f"Agent with id {agent_id} already exists.")
        if agent_id.type not in self.factories:
            self.factories[agent_id.type] = agent_factory  # type: ignore[assignment]
            self.instance_types[agent_id.type] = agent_instance.__class__
            await announce("register_type", agent_id.type)
        elif self.instance_types.get(agent_id.type) is None:
            raise ValueError("Agent factories and agent instances cannot be registered to the same type.")
        elif self.instance_types[agent_id.type] is not agent_instance.__class__:
            raise ValueError("Agent instances must be the same object type.")
        await agent_instance.bind_id_and_runtime(id=agent_id, runtime=self._runtime)
        self.agents[agent_id] = agent_instance

    async def get(self, agent_id: AgentId) -> Agent:
        """The agent, made on first use (concurrent first messages wait for the one creation)."""
        agent = self.agents.get(agent_id)
        if agent is not None:
            return agent
        making = self._creating.get(agent_id)
        if making is not None:
            return await asyncio.shield(making)
        factory = self.factories.get(agent_id.type)
        if factory is None:
            raise LookupError(f"Agent with name {agent_id.type} not found.")
        making = self._creating[agent_id] = asyncio.get_running_loop().create_future()
        try:
            with AgentInstantiationContext.populate_context((self._runtime, agent_id)):
                agent = await _call_factory(factory, self._runtime, agent_id)
            if self.states is not None:  # what the store holds for it (its last worker's checkpoint)
                await self.states.restore(agent_id, agent)
            self.agents[agent_id] = agent
            making.set_result(agent)
            return agent
        except BaseException as exc:
            making.set_exception(exc)
            making.exception()  # retrieved: waiters (if any) get it; no "never retrieved" warning
            raise
        finally:
            self._creating.pop(agent_id, None)


async def _call_factory(factory: Callable[..., Any], runtime: Any, agent_id: AgentId) -> Agent:
    params = len(inspect.signature(factory).parameters)
    if params == 0:
        made = factory()
    elif params == 2:
        warnings.warn("Agent factories that take two arguments are deprecated.", stacklevel=2)
        made = factory(runtime, agent_id)
    else:
        raise ValueError("Agent factory must take 0 or 2 arguments.")
    if inspect.isawaitable(made):
        made = await made
    return made
