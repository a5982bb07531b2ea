"""Agents' states in the mesh's state store: ``MeshWorkerRuntime(state_store=URL, checkpoint=...)``.

The same store as durable mesh objects (:mod:`mesh._core.stores`: a directory, or ``redis://...``),
the same sealing (a MAC keyed from ``MESH_SECRET``, over the key too, checked before anything is
decoded) and the same incremental checkpoints (:mod:`mesh._core.ckpt_log`: a base, then deltas).
An agent's state is kept under ``autogen-<BLAKE2b of str(AgentId)>`` as JSON (AutoGen's states are
JSON values): nothing from the store is ever unpickled.

What a worker with a store does:

* ``save_state`` / ``agent_save_state`` also write each agent's state there (on the worker that
  holds the agent); ``load_state`` / ``agent_load_state`` write what they loaded;
* with ``checkpoint=True``, after every message an agent handled without raising (before a
  ``send_message`` is answered), its ``save_state()`` is written;
* an agent made on this worker (first message after a start, or after the worker that held it died
  and its keys moved here) gets ``load_state`` of what the store holds for it, first.

Several workers share a store to take over each other's agents. There is no activation election
for AutoGen agents: the directory's table decides which worker holds a key; the last write wins.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Mapping
from typing import Any

from autogen_core import Agent, AgentId

from mesh._core import ckpt_log, settings
from mesh._core.ckpt_log import Chain
from mesh._core.state_store import StateStore
from mesh._core.stores import default_url, open_store
from mesh._errors import CheckpointError, StateStoreError

__all__ = ["AgentStates", "object_id"]


def object_id(agent_id: AgentId) -> str:
    """The store's key of an agent (ids are limited to letters, digits, - and _)."""
    return "autogen-" + hashlib.blake2b(str(agent_id).encode(), digest_size=20).hexdigest()


class AgentStates:
    """A worker's side of its agents' states in the store (opened on first use)."""

    def __init__(self, url: str | None, checkpoint: bool) -> None:
        self.url = url or default_url()
        self.checkpoint = bool(checkpoint)
        self._store: StateStore | None = None
        self._chains: dict[str, tuple[Chain, list[int]]] = {}
        self._lock = threading.Lock()

    @property
    def store(self) -> StateStore:
        if self._store is None:
            self._store = open_store(self.url, settings.current().secret)
        return self._store

    def _chain(self, oid: str) -> tuple[Chain, list[int]]:
        with self._lock:
            return self._chains.setdefault(oid, (Chain(), [-1]))

    def write(self, agent_id: AgentId, state: Mapping[str, Any]) -> int:
        """Store ``state`` as the agent's latest (blocking I/O: call it off the loop); its version.

        Raises:
            CheckpointError: the state is not JSON.
            StateStoreError: the store failed.
        """
        try:
            data = json.dumps(dict(state), separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"the state of agent {agent_id} cannot be stored: it is not JSON ({exc})") from None
        oid = object_id(agent_id)
        chain, version = self._chain(oid)
        with chain.lock:
            try:
                _, version[0], _ = chain.write(self.store, oid, 0, version[0], data)
            except StateStoreError as exc:
                raise StateStoreError(f"the state of agent {agent_id} was not stored: {exc}") from None
            return version[0]

    def read(self, agent_id: AgentId) -> dict[str, Any] | None:
        """The agent's latest stored state, or None (blocking I/O).

        Raises:
            StateStoreError: it is corrupted or was not sealed with this mesh's secret (names the agent
                and the store).
        """
        oid = object_id(agent_id)
        try:
            found = ckpt_log.read(self.store, oid)
            if found is None:
                return None
            state = json.loads(found[1])
            if not isinstance(state, dict):
                raise ValueError("not a JSON object")
        except StateStoreError as exc:
            raise StateStoreError(f"cannot restore agent {agent_id}: {exc}") from None
        except ValueError as exc:
            raise StateStoreError(f"cannot restore agent {agent_id} from the state store {self.store.where}: "
                                  f"its state is not a JSON object ({exc})") from None
        chain, version = self._chain(oid)
        with chain.lock:
            version[0] = max(version[0], found[0])
        return state

    # -- coroutines for the worker's rooms ----------------------------------------------------
    async def save(self, agent_id: AgentId, state: Mapping[str, Any]) -> None:
        await asyncio.to_thread(self.write, agent_id, state)

    async def restore(self, agent_id: AgentId, agent: Agent) -> None:
        """A newly made agent: give it what the store holds for it."""
        state = await asyncio.to_thread(self.read, agent_id)
        if state is not None:
            await agent.load_state(state)

    async def after_message(self, agent: Agent) -> None:
        """An agent handled a message (``checkpoint=True``): store its state."""
        await self.save(agent.id, await agent.save_state())
