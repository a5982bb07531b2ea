"""Messages between agents: a publish fanned out to the workers that own its recipients (one batched
item per worker), a ``send_message`` as a request to the owner's endpoint answered by a response to
the caller's, and the receiving side, where every item is handed to the worker's asyncio loop
(handlers never run on mesh threads)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from autogen_core import AgentId, CancellationToken, MessageContext, MessageHandlerContext, TopicId

import mesh

from . import _wire
from ._errors import UnknownAgentType, WorkerUnavailable
from ._link import Links
from ._pending import Pending
from ._registry import Registry
from ._remote_errors import CANCELLED, error_dict
from ._serde import Codec
from ._state import Control
from ._table import Table

__all__ = ["Delivery"]

log = logging.getLogger("mesh.autogen")


class Delivery:
    """Sending and receiving of one worker. :attr:`tasks` are its running handlers; set :attr:`loop`."""

    def __init__(self, worker_id: str, codec: Codec, registry: Registry, table: Table, links: Links,
                 pending: Pending, control: Control, endpoint: Callable[[], Any], running: Callable[[], bool]) -> None:
        self.worker_id = worker_id
        self._codec = codec
        self._registry = registry
        self._table = table
        self._links = links
        self._pending = pending
        self._control = control
        self._endpoint = endpoint
        self._running = running
        self.loop: asyncio.AbstractEventLoop | None = None
        self.tasks: set[asyncio.Task] = set()
        self._remote_tokens: dict[str, CancellationToken] = {}

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # ------------------------------------------------------------------ sending
    def publish(self, message: Any, topic_id: TopicId, sender: AgentId | None, message_id: str) -> None:
        type_name, ct, data = self._codec.encode(message)
        by_worker: dict[str, list[list[str]]] = {}
        local: list[AgentId] = []
        for agent_id in self._table.recipients(topic_id):
            if sender is not None and agent_id == sender:
                continue
            wid = self._table.owner(agent_id)
            if wid is None:
                log.debug("autogen: no worker holds agent type %s; %s not delivered", agent_id.type, agent_id)
            elif wid == self.worker_id:
                local.append(agent_id)
            else:
                by_worker.setdefault(wid, []).append(_wire.aid(agent_id))  # type: ignore[arg-type]
        for wid, recipients in by_worker.items():
            link = self._links.get(wid)
            if link is None:
                continue
            link.put({"k": "pub", "to": recipients, "sender": _wire.aid(sender), "topic": _wire.topic(topic_id),
                      "type": type_name, "ct": ct, "data": data, "id": message_id})
        if local:
            msg = self._codec.decode(type_name, ct, data)  # each delivery gets its own copy, as across processes
            for agent_id in local:
                self.spawn(self._on_publish(agent_id, msg, sender, topic_id, message_id))

    async def send(self, message: Any, recipient: AgentId, sender: AgentId | None, message_id: str,
                   token: CancellationToken) -> Any:
        type_name, ct, data = self._codec.encode(message)
        wid = self._table.owner(recipient)
        if wid is None:
            raise UnknownAgentType(f"no worker in the mesh registered agent type {recipient.type!r} (recipient {recipient})")
        if wid == self.worker_id:
            msg = self._codec.decode(type_name, ct, data)
            task = self.spawn(self._on_rpc(recipient, msg, sender, message_id, token))
            token.link_future(task)
            return await task
        link = self._links.get(wid)
        if link is None:
            raise WorkerUnavailable(f"worker {wid} holding {recipient} is not in the directory table")
        return await self._pending.request(
            link, {"k": "rpc", "reply": self._endpoint(), "from": self.worker_id, "to": _wire.aid(recipient),
                   "sender": _wire.aid(sender), "type": type_name, "ct": ct, "data": data, "id": message_id}, token)

    # ------------------------------------------------------------------ receiving (mesh threads -> loop)
    def receive(self, batch: Any) -> int:
        if not isinstance(batch, list):
            log.warning("autogen: dropped a malformed delivery (%s)", type(batch).__name__)
            return 0
        loop = self.loop
        if loop is None or loop.is_closed() or not self._running():
            raise mesh.AgentNotFound("this autogen worker runtime is not running")
        loop.call_soon_threadsafe(self._dispatch, batch)
        return len(batch)

    def _dispatch(self, batch: list) -> None:
        for item in batch:
            try:
                kind = item["k"]
                if kind == "pub":
                    msg = self._codec.decode(str(item["type"]), str(item["ct"]), bytes(item["data"]))
                    sender, topic_id = _wire.unaid(item["sender"]), _wire.untopic(item["topic"])
                    for to in item["to"]:
                        self.spawn(self._on_publish(_wire.unaid(to), msg, sender, topic_id, str(item["id"])))
                elif kind == "rpc":
                    rid = str(item["rid"])
                    token = CancellationToken()  # registered now: a "cancel" later in this batch finds it
                    self._remote_tokens[rid] = token
                    token.link_future(self.spawn(self._serve_rpc(item, rid, token)))
                elif kind == "resp":
                    self._pending.answer(item, self._codec)
                elif kind == "cancel":
                    token = self._remote_tokens.get(str(item["rid"]))
                    if token is not None:
                        token.cancel()
                elif kind == "ctl":
                    self.spawn(self._control.serve(item))
                else:
                    raise ValueError(f"unknown kind {kind!r}")
            except Exception as exc:
                log.warning("autogen: dropped a malformed delivery item: %s", exc)

    async def _on_publish(self, agent_id: AgentId | None, message: Any, sender: AgentId | None,
                          topic_id: TopicId | None, message_id: str) -> None:
        assert agent_id is not None
        try:
            agent = await self._registry.get(agent_id)
            ctx = MessageContext(sender=sender, topic_id=topic_id, is_rpc=False,
                                 cancellation_token=CancellationToken(), message_id=message_id)
            with MessageHandlerContext.populate_context(agent.id):
                await agent.on_message(message, ctx=ctx)
            if self._registry.states is not None and self._registry.states.checkpoint:
                await self._registry.states.after_message(agent)
        except asyncio.CancelledError:
            raise
        except BaseException:
            log.error("autogen: error processing publish message for %s", agent_id, exc_info=True)

    async def _on_rpc(self, recipient: AgentId, message: Any, sender: AgentId | None, message_id: str,
                      token: CancellationToken) -> Any:
        agent = await self._registry.get(recipient)
        ctx = MessageContext(sender=sender, topic_id=None, is_rpc=True, cancellation_token=token, message_id=message_id)
        with MessageHandlerContext.populate_context(agent.id):
            result = await agent.on_message(message, ctx=ctx)
        if self._registry.states is not None and self._registry.states.checkpoint:
            await self._registry.states.after_message(agent)  # saved before the answer is sent
        return result

    async def _serve_rpc(self, item: dict, rid: str, token: CancellationToken) -> None:
        """Run a request from another worker and answer it. The caller's cancel (a ``cancel`` item)
        cancels ``token``, which cancels this task and so the handler it awaits."""
        reply: dict[str, Any] = {"k": "resp", "rid": rid}
        try:
            msg = self._codec.decode(str(item["type"]), str(item["ct"]), bytes(item["data"]))
            recipient = _wire.unaid(item["to"])
            assert recipient is not None
            if not self._registry.holds(recipient):
                raise UnknownAgentType(f"agent type {recipient.type!r} is not registered on worker {self.worker_id}")
            result = await self._on_rpc(recipient, msg, _wire.unaid(item["sender"]), str(item["id"]), token)
            reply["type"], reply["ct"], reply["data"] = self._codec.encode_result(result)
            cls = result.__class__
            reply["py"] = f"{cls.__module__}:{cls.__qualname__}"
        except asyncio.CancelledError:
            reply["error"] = dict(CANCELLED)
        except BaseException as exc:
            reply["error"] = error_dict(exc)
        finally:
            self._remote_tokens.pop(rid, None)
        self._links.reply(str(item.get("from", "")), item.get("reply"), reply)
