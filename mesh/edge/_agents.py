"""Which agents a server's edge serves, their A2A cards, and one JSON-RPC endpoint per agent.

An agent is served under a name: its registered name (``to_dist(name=..., detached=True)``) or
its own ``name`` (``AgentBase(name=...)``); when several agents have the same ``name``, the
newest. The edge calls an agent through a mesh proxy of it, as any client would: its calls take
their turn in the agent's mailbox, and the server counts them like the others.
"""

from __future__ import annotations

import collections
import threading
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import quote

from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes.jsonrpc_dispatcher import JsonRpcDispatcher
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
    StringList,
)

from mesh.client import RpcObject
from mesh.edge._a2a import BoundedTaskStore, MeshExecutor
from mesh.server._dispatch import Servicer
from mesh.server._mailbox import Actor

__all__ = ["PROTOCOL_VERSIONS", "AgentDirectory"]

PROTOCOL_VERSIONS = ("1.0", "0.3")  # served on the same URL: 0.3's message/send, 1.0's SendMessage
_ENDPOINTS_MAX = 256  # per-agent handlers kept (each holds its agent's recent tasks)


def _version() -> str:
    try:
        return version("zmq-agent-mesh")
    except PackageNotFoundError:  # pragma: no cover  (a source tree that is not installed)
        return "0"


_VERSION = _version()


def is_agent(obj: Any) -> bool:
    return obj is not None and bool(getattr(type(obj), "_mesh_agent", False))


class AgentDirectory:
    """The named agents of one server, resolved on each request (agents come and go)."""

    def __init__(self, servicer: Servicer, address: str, token: str | None, max_tasks: int = 1000) -> None:
        self.servicer = servicer
        self.address = address
        self.token = token
        self.max_tasks = max_tasks
        self._by_name: dict[str, str] = {}  # name -> object id, a cache checked on every use
        self._endpoints: collections.OrderedDict[str, JsonRpcDispatcher] = collections.OrderedDict()
        self._lock = threading.Lock()

    # ------------------------------------------------------------ lookup
    def find(self, name: str) -> Actor | None:
        """The agent served as ``name``, or ``None``."""
        objects = self.servicer.objects
        actor = objects.lookup(name)
        if actor is not None and is_agent(actor.obj):
            return actor
        cached = self._by_name.get(name)
        if cached is not None:
            actor = objects.get(cached)
            if actor is not None and is_agent(actor.obj) and getattr(actor.obj, "name", None) == name:
                return actor
            self._by_name.pop(name, None)
        for actor in reversed(list(objects.actors.values())):  # the newest first
            if is_agent(actor.obj) and getattr(actor.obj, "name", None) == name:
                self._by_name[name] = actor.id
                return actor
        return None

    def listing(self) -> list[dict[str, Any]]:
        """Every agent served: name, class, id (``GET /a2a/``)."""
        rows = []
        for actor in list(self.servicer.objects.actors.values()):
            if not is_agent(actor.obj):
                continue
            name = actor.name or getattr(actor.obj, "name", None)
            if isinstance(name, str):
                rows.append({"name": name, "class": actor.cls_name, "id": actor.id,
                             "card": f"/a2a/{quote(name, safe='')}/.well-known/agent-card.json"})
        return rows

    def proxy(self, actor: Actor) -> RpcObject:
        """A mesh proxy of the agent (calls go through its mailbox, like any client's)."""
        methods = dict(getattr(type(actor.obj), "_mesh_methods", {}))
        return RpcObject(self.address, actor.id, actor.cls_name, methods, self.servicer.pool_url, self.servicer.instance)

    # --------------------------------------------------------- endpoints
    def endpoint(self, name: str, actor: Actor, base_url: str) -> JsonRpcDispatcher:
        """The JSON-RPC dispatcher of one agent (made on first use, kept for the agent's tasks)."""
        key = f"{name}\0{actor.id}"
        with self._lock:
            found = self._endpoints.get(key)
            if found is not None:
                self._endpoints.move_to_end(key)
                return found

        def resolve() -> RpcObject | None:
            current = self.find(name)
            return self.proxy(current) if current is not None else None

        handler = DefaultRequestHandler(
            agent_executor=MeshExecutor(resolve, self.address), task_store=BoundedTaskStore(self.max_tasks),
            agent_card=self.card(name, actor, base_url),
        )
        dispatcher = JsonRpcDispatcher(request_handler=handler, enable_v0_3_compat=True)
        with self._lock:
            found = self._endpoints.setdefault(key, dispatcher)
            while len(self._endpoints) > _ENDPOINTS_MAX:
                self._endpoints.popitem(last=False)
        return found

    def card(self, name: str, actor: Actor, base_url: str) -> AgentCard:
        """The A2A card of one agent, its URLs under ``base_url`` (as the client reached us)."""
        url = f"{base_url.rstrip('/')}/a2a/{quote(name, safe='')}/"
        doc = (type(actor.obj).__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        description = doc or f"{actor.cls_name} agent {name!r} on mesh server {self.servicer.name}"
        card = AgentCard(
            name=name, description=description, version=_VERSION,
            supported_interfaces=[
                AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version=v) for v in PROTOCOL_VERSIONS
            ],
            capabilities=AgentCapabilities(streaming=True, push_notifications=False),
            default_input_modes=["text/plain", "application/json"], default_output_modes=["text/plain"],
            skills=[AgentSkill(
                id="reply", name="reply", description=f"{actor.cls_name}.reply: one message in, its reply out "
                "(message/stream: the items of a streaming reply as they are made)", tags=["mesh", actor.cls_name],
            )],
        )
        if self.token is not None:
            card.security_schemes["bearer"].CopyFrom(
                SecurityScheme(http_auth_security_scheme=HTTPAuthSecurityScheme(scheme="bearer")))
            card.security_requirements.append(SecurityRequirement(schemes={"bearer": StringList(list=[])}))
        return card
