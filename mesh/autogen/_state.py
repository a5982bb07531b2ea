"""State and metadata across the mesh: ``save_state`` gathers every worker's agents, ``load_state``
and ``agent_*`` go to the worker that owns each agent (a ``ctl`` request, answered as a JSON value)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from autogen_core import AgentId

from . import _wire
from ._errors import UnknownAgentType, WorkerUnavailable
from ._link import Links
from ._pending import Pending
from ._registry import Registry
from ._remote_errors import error_dict
from ._serde import encode_json
from ._table import Table

__all__ = ["Control"]


class Control:
    """Control operations (``save_all``, ``load_all``, ``save``, ``load``, ``metadata``), here or remote."""

    def __init__(self, worker_id: str, registry: Registry, table: Table, links: Links, pending: Pending,
                 endpoint: Callable[[], Any]) -> None:
        self.worker_id = worker_id
        self._registry = registry
        self._table = table
        self._links = links
        self._pending = pending
        self._endpoint = endpoint

    async def local(self, op: str, arg: Any) -> Any:
        registry = self._registry
        states = registry.states  # with a state store: what is saved or loaded is stored there too
        if op == "save_all":
            saved = {a: dict(await agent.save_state()) for a, agent in list(registry.agents.items())}
            if states is not None:
                for a, state in saved.items():
                    await states.save(a, state)
            return {str(a): state for a, state in saved.items()}
        if op == "load_all":
            for key, state in dict(arg).items():
                agent_id = AgentId.from_str(key)
                if registry.holds(agent_id):
                    await (await registry.get(agent_id)).load_state(state)
                    if states is not None:
                        await states.save(agent_id, state)
            return None
        agent_id = _wire.unaid(arg["agent"])
        assert agent_id is not None
        agent = await registry.get(agent_id)
        if op == "save":
            state = dict(await agent.save_state())
            if states is not None:
                await states.save(agent_id, state)
            return state
        if op == "load":
            await agent.load_state(arg["state"])
            if states is not None:
                await states.save(agent_id, arg["state"])
            return None
        if op == "metadata":
            return dict(agent.metadata)
        raise ValueError(f"unknown control operation {op!r}")

    async def serve(self, item: dict) -> None:
        """A ``ctl`` request from another worker (on the loop): run it, answer it."""
        reply: dict[str, Any] = {"k": "resp", "rid": str(item["rid"])}
        try:
            value = await self.local(str(item["op"]), item.get("arg"))
            reply["type"], reply["ct"], reply["data"] = encode_json(value)
        except BaseException as exc:
            reply["error"] = error_dict(exc)
        self._links.reply(str(item.get("from", "")), item.get("reply"), reply)

    async def ask(self, wid: str, op: str, arg: Any) -> Any:
        if wid == self.worker_id:
            return await self.local(op, arg)
        link = self._links.get(wid)
        if link is None:
            raise WorkerUnavailable(f"worker {wid} is not in the directory table")
        return await self._pending.request(
            link, {"k": "ctl", "reply": self._endpoint(), "from": self.worker_id, "op": op, "arg": arg})

    async def ask_owner(self, agent_id: AgentId, op: str, **extra: Any) -> Any:
        wid = self._table.owner(agent_id)
        if wid is None:
            raise UnknownAgentType(f"no worker in the mesh registered agent type {agent_id.type!r}")
        return await self.ask(wid, op, {"agent": _wire.aid(agent_id), **extra})

    async def save_all(self) -> Mapping[str, Any]:
        parts = await asyncio.gather(*(self.ask(w, "save_all", None) for w in [self.worker_id, *self._table.others()]))
        state: dict[str, Any] = {}
        for part in parts:
            state.update(part)
        return state

    async def load_all(self, state: Mapping[str, Any]) -> None:
        by_worker: dict[str, dict[str, Any]] = {}
        for key, value in state.items():
            wid = self._table.owner(AgentId.from_str(key))
            if wid is not None:
                by_worker.setdefault(wid, {})[key] = value
        await asyncio.gather(*(self.ask(w, "load_all", part) for w, part in by_worker.items()))
