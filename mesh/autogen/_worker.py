"""``MeshWorkerRuntime``: an ``autogen_core.AgentRuntime`` whose workers talk to each other directly.

Each worker runs an in-process mesh server that hosts its :class:`~._endpoint.Endpoint`. It joins
the host's :class:`~._directory.Directory` (by address, or by discovery), gets the table of workers,
agent types and subscriptions, and from then on sends every publish and ``send_message`` straight
to the workers that hold the recipients. The host can be stopped or frozen without stopping them.

This module is the facade: AutoGen's protocol, the lifetime, and the wiring of the rooms
(:mod:`._registry` agents, :mod:`._table` subscriptions and routing, :mod:`._delivery` publish, send
and receive, :mod:`._pending` awaited answers, :mod:`._state` state across the mesh,
:mod:`._membership` server and directory, :mod:`._link` per-worker senders, :mod:`._serde` messages).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from autogen_core import (
    JSON_DATA_CONTENT_TYPE,
    PROTOBUF_DATA_CONTENT_TYPE,
    Agent,
    AgentId,
    AgentMetadata,
    AgentType,
    CancellationToken,
    MessageSerializer,
    Subscription,
    TopicId,
)

from . import _bridge
from ._delivery import Delivery
from ._durable import AgentStates
from ._link import Links
from ._membership import Membership
from ._net import heartbeat_default
from ._pending import Pending
from ._registry import Registry
from ._serde import Codec
from ._state import Control
from ._table import Table

__all__ = ["MeshWorkerRuntime"]

log = logging.getLogger("mesh.autogen")

T = TypeVar("T", bound=Agent)


class MeshWorkerRuntime:
    """An AutoGen agent runtime on the mesh (the drop-in for ``GrpcWorkerAgentRuntime``).

    Args:
        host_address: ``"host:port"`` of a :class:`MeshWorkerRuntimeHost`; ``None`` finds the host by
            discovery (the directory's well-known name on the discovered mesh servers).
        tracer_provider, extra_grpc_config: accepted for compatibility with the gRPC runtime; unused.
        payload_serialization_format: content type messages are encoded with (``application/json``
            by default, or ``application/x-protobuf``).
        bind_host: the address this worker's mesh server listens on; by default loopback when the host
            is on loopback, else this machine's address towards the host (which needs ``MESH_SECRET``).
        heartbeat_timeout: how soon a ``send_message`` to a dead worker fails (default
            ``MESH_HEARTBEAT_TIMEOUT`` or 3 s).
        join_timeout: how long ``start()`` keeps trying to reach the host.
        capacity: threads of the worker's mesh server.
        max_message_size: the largest delivery (a batch of events, requests and responses) this
            worker's server accepts from another worker, in bytes (default 32 MiB, as any mesh server);
            a bigger one is refused there, and the sender logs it or raises it to its ``send_message``.
        poll_interval: seconds between the worker's refreshes of the directory table.
        state_store: a state store's URL (a directory, or ``redis://...``, as for ``AgentServer``):
            ``save_state`` / ``agent_save_state`` (and the ``load`` ones) also keep each agent's state
            there, and an agent made on this worker starts from what it holds (see :mod:`._durable`).
        checkpoint: also store an agent's ``save_state()`` after every message it handled (before a
            ``send_message`` is answered); without ``state_store`` it uses the default store.
    """

    def __init__(
        self,
        host_address: str | None = None,
        tracer_provider: Any = None,
        extra_grpc_config: Any = None,
        payload_serialization_format: str = JSON_DATA_CONTENT_TYPE,
        *,
        bind_host: str | None = None,
        heartbeat_timeout: float | None = None,
        join_timeout: float = 30.0,
        capacity: int = 16,
        poll_interval: float = 1.0,
        max_message_size: int = 32 * 2**20,
        state_store: str | None = None,
        checkpoint: bool = False,
    ) -> None:
        if payload_serialization_format not in {JSON_DATA_CONTENT_TYPE, PROTOBUF_DATA_CONTENT_TYPE}:
            raise ValueError(f"Unsupported payload serialization format: {payload_serialization_format}")
        self._hb = float(heartbeat_timeout) if heartbeat_timeout is not None else heartbeat_default()
        self.worker_id = uuid.uuid4().hex
        self._token = uuid.uuid4().hex
        self._running = False
        self._stop_event = threading.Event()
        self._threads: list[threading.Thread] = []
        self._codec = Codec(payload_serialization_format)
        self._registry = Registry(self)
        if state_store is not None or checkpoint:
            self._registry.states = AgentStates(state_store, checkpoint)
        self._routes = Table(self.worker_id, self._registry)
        self._links = Links(self._routes.endpoint_of, ack_timeout=2 * self._hb + 5)
        self._pending = Pending(self._hb)
        self._member = Membership(
            self.worker_id, self._routes, self._my_info, host_address=host_address, bind_host=bind_host,
            capacity=int(capacity), max_message_size=int(max_message_size), join_timeout=float(join_timeout),
            poll_interval=float(poll_interval),
            heartbeat=self._hb, stop=self._stop_event)
        self._control = Control(self.worker_id, self._registry, self._routes, self._links, self._pending,
                                lambda: self._member.reply_ref)
        self._delivery = Delivery(self.worker_id, self._codec, self._registry, self._routes, self._links,
                                  self._pending, self._control, lambda: self._member.reply_ref, lambda: self._running)

    # ------------------------------------------------------------------ views the rooms own
    @property
    def _agents(self) -> dict[AgentId, Agent]:
        return self._registry.agents

    @property
    def _table(self) -> dict[str, Any]:
        return self._routes.view

    @property
    def _tasks(self) -> set[asyncio.Task]:
        return self._delivery.tasks

    @property
    def _endpoint(self) -> Any:
        return self._member.endpoint

    @property
    def _server(self) -> Any:
        return self._member.server

    def _holders(self, agent_type: str) -> list[str]:
        return self._routes.holders(agent_type)

    def _my_info(self) -> dict[str, Any]:
        server = self._member.server
        return {"address": server.address if server is not None else "", "types": list(self._registry.factories),
                "subs": self._routes.encoded_subs()}

    # called by the endpoint, on mesh threads
    def _receive(self, batch: Any) -> int:
        return self._delivery.receive(batch)

    def _apply_table(self, table: Any) -> None:
        self._routes.apply(table)

    # ------------------------------------------------------------------ lifetime
    async def start(self) -> None:
        """Start this worker's mesh server and join the host's directory."""
        if self._running:
            raise ValueError("Runtime is already running.")
        loop = asyncio.get_running_loop()
        self._delivery.loop = self._pending.loop = loop
        self._links.bind(loop)
        self._stop_event.clear()
        await _bridge.blocking(self._member.join, self._token, self)
        self._running = True
        threads = ((lambda: self._member.poll(lambda: self._running), "autogen-poll"),
                   (lambda: self._pending.watch(self._links, self._stop_event), "autogen-watch"))
        for target, name in threads:
            t = threading.Thread(target=target, name=f"{name}-{self.worker_id[:8]}", daemon=True)
            t.start()
            self._threads.append(t)

    async def stop(self) -> None:
        """Leave the directory and stop at once (running handlers are cancelled)."""
        if not self._running:
            raise RuntimeError("Runtime is not running.")
        self._running = False
        self._stop_event.set()
        current = asyncio.current_task()
        tasks = [t for t in self._delivery.tasks if t is not current]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pending.fail_all("the runtime stopped before the answer came")
        await self._links.aclose(2.0)
        await _bridge.blocking(self._stop_blocking)
        for agent in list(self._registry.agents.values()):
            try:
                await agent.close()
            except Exception:
                log.exception("autogen: closing agent %s", agent.id)

    def _stop_blocking(self) -> None:
        self._member.leave()
        for t in self._threads:
            t.join(self._hb + 2)
        self._threads.clear()
        self._member.shutdown(self._token)

    async def stop_when_signal(self, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)) -> None:
        """Run until one of ``signals`` arrives, then :meth:`stop`."""
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        for sig in signals:
            loop.add_signal_handler(sig, done.set)
        await done.wait()
        await self.stop()

    async def stop_when_idle(self) -> None:
        """Wait until no handler runs and no answer is pending on this worker, then stop."""
        while True:
            tasks = [t for t in self._delivery.tasks if t is not asyncio.current_task()]
            if not tasks and not self._pending:
                break
            await asyncio.gather(*tasks, return_exceptions=True)
            if not tasks:
                await asyncio.sleep(0.01)
        await self.stop()

    # ------------------------------------------------------------------ messages
    def add_message_serializer(self, serializer: MessageSerializer[Any] | Sequence[MessageSerializer[Any]]) -> None:
        self._codec.add(serializer)

    def _check_running(self, what: str) -> None:
        if not self._running:
            raise ValueError(f"Runtime must be running when {what} message.")

    async def publish_message(
        self,
        message: Any,
        topic_id: TopicId,
        *,
        sender: AgentId | None = None,
        cancellation_token: CancellationToken | None = None,
        message_id: str | None = None,
    ) -> None:
        self._check_running("publishing")
        self._delivery.publish(message, topic_id, sender, message_id or str(uuid.uuid4()))

    async def send_message(
        self,
        message: Any,
        recipient: AgentId,
        *,
        sender: AgentId | None = None,
        cancellation_token: CancellationToken | None = None,
        message_id: str | None = None,
    ) -> Any:
        self._check_running("sending")
        return await self._delivery.send(message, recipient, sender, message_id or str(uuid.uuid4()),
                                         cancellation_token or CancellationToken())

    # ------------------------------------------------------------------ state across the mesh
    async def save_state(self) -> Mapping[str, Any]:
        """The state of every instantiated agent on every worker, keyed by ``str(AgentId)``."""
        return await self._control.save_all()

    async def load_state(self, state: Mapping[str, Any]) -> None:
        """Give each agent's state to the worker that holds (or will hold) that agent."""
        await self._control.load_all(state)

    async def agent_metadata(self, agent: AgentId) -> AgentMetadata:
        return await self._control.ask_owner(agent, "metadata")  # type: ignore[return-value]

    async def agent_save_state(self, agent: AgentId) -> Mapping[str, Any]:
        return await self._control.ask_owner(agent, "save")

    async def agent_load_state(self, agent: AgentId, state: Mapping[str, Any]) -> None:
        await self._control.ask_owner(agent, "load", state=dict(state))

    # ------------------------------------------------------------------ agents
    async def register_factory(
        self,
        type: str | AgentType,
        agent_factory: Callable[[], T | Awaitable[T]],
        *,
        expected_class: type[T] | None = None,
    ) -> AgentType:
        agent_type = AgentType(type) if isinstance(type, str) else type
        self._registry.add_factory(agent_type, agent_factory, expected_class)
        self._routes.changed()
        await self._member.tell("register_type", agent_type.type)
        return agent_type

    async def register_agent_instance(self, agent_instance: Agent, agent_id: AgentId) -> AgentId:
        await self._registry.add_instance(agent_instance, agent_id, self._member.tell)
        return agent_id

    async def try_get_underlying_agent_instance(self, id: AgentId, type: type[T] = Agent) -> T:  # type: ignore[assignment]
        if id.type not in self._registry.factories:
            raise LookupError(f"Agent with name {id.type} not found on this worker.")
        wid = self._routes.owner(id)
        if wid != self.worker_id:
            raise LookupError(f"agent {id} lives on worker {wid}, not in this process")
        agent = await self._registry.get(id)
        if not isinstance(agent, type):
            raise TypeError(f"Agent with name {id.type} is not of type {type.__name__}. It is of type "
                            f"{agent.__class__.__name__}")
        return agent  # type: ignore[return-value]

    async def get(self, id_or_type: AgentId | AgentType | str, /, key: str = "default", *, lazy: bool = True) -> AgentId:
        if isinstance(id_or_type, AgentId):
            agent_id = id_or_type
        else:
            agent_id = AgentId(id_or_type if isinstance(id_or_type, str) else id_or_type.type, key)
        if not lazy:
            await self.agent_metadata(agent_id)  # instantiates it where it lives
        return agent_id

    # ------------------------------------------------------------------ subscriptions
    async def add_subscription(self, subscription: Subscription) -> None:
        encoded = self._routes.add_sub(subscription)
        await self._member.tell("add_subscription", encoded)

    async def remove_subscription(self, id: str) -> None:
        self._routes.remove_sub(id)
        await self._member.tell("remove_subscription", id)

    def __repr__(self) -> str:
        server = self._member.server
        return f"<MeshWorkerRuntime {self.worker_id[:8]} {server.address if server is not None else 'not started'}>"
