"""A2A's side of a call: the request's message becomes a ``Msg`` for the agent, the agent's reply
(whole, or chunk by chunk) becomes the task's artifact and final status.

:func:`reply_chunks` is the one place that knows what a mesh call returns (a ``Placeholder``, or
for a streaming reply a ``mesh.Stream``): adjust it there when streams change. The task of an
A2A request is the mesh call: its metadata holds the call's mesh task id (``mesh_task``) and the
server (``mesh_server``); the ``Msg`` the agent gets carries the A2A ``task_id``, ``context_id``
and ``message_id`` in ``metadata["a2a"]``, so an agent can keep one conversation per context.
"""

from __future__ import annotations

import collections
import inspect
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import Message, Part, Role, Task, TaskState, TaskStatus
from google.protobuf.json_format import MessageToDict

from mesh._core import tracing
from mesh._core.methods import ASYNC, ASYNC_MSG, SYNC
from mesh._msg import Msg

__all__ = ["BoundedTaskStore", "MeshExecutor", "as_text", "reply_chunks", "to_msg"]

log = logging.getLogger("mesh.edge")

CallHook = Callable[[Any, Msg, "str | None"], Any]


def _call_agent(agent: Any, msg: Msg, traceparent: str | None) -> Any:
    """Start the mesh call for one A2A request; returns its future (or Stream).

    ``traceparent`` is the W3C header of the HTTP request (``None`` without one): the seam for
    tracing, which wraps this call in the request's trace context.
    """
    modes = getattr(agent, "_mesh_methods", None) or {}
    mode = modes.get("reply")
    start = agent.reply if mode is not None and mode not in (SYNC, ASYNC, ASYNC_MSG) else agent  # a @stream_func reply
    if not tracing.enabled():
        return start(msg)
    # the request's span is the parent of the call's client span (sent here, while it is current)
    with tracing.incoming({"traceparent": traceparent} if traceparent else {}, "a2a " + str(getattr(agent, "name", "agent"))):
        return start(msg)


async def reply_chunks(
    agent: Any, msg: Msg, traceparent: str | None = None, on_call: Callable[[Any], None] | None = None,
) -> AsyncIterator[Any]:
    """The items of the agent's reply to ``msg``, as they are made.

    A reply that is iterable chunk-wise (a ``mesh.Stream``: ``async for``; a generator of a local
    agent) gives each item as it comes; any other reply (a ``Placeholder``) gives one item, the
    whole ``Msg``. ``on_call`` gets the call's future (or stream) as soon as the call is sent.
    """
    result = call_agent(agent, msg, traceparent)
    if on_call is not None:
        on_call(result)
    if hasattr(type(result), "__aiter__"):
        async for item in result:
            yield item
        return
    if inspect.isgenerator(result):
        for item in result:
            yield item
        return
    if inspect.isawaitable(result):
        result = await result
    yield result


call_agent: CallHook = _call_agent  # the integrator's seam (tracing may replace it)


def as_text(item: Any) -> str:
    """A reply (or one chunk of it) as text: a ``Msg``'s content; text as it is; anything else as JSON."""
    content = item.content if isinstance(item, Msg) else item
    if isinstance(content, str):
        return content
    if isinstance(content, bytes):
        return content.decode("utf-8", "replace")
    try:
        return json.dumps(content, default=str, ensure_ascii=False)
    except (TypeError, ValueError):  # pragma: no cover  (default=str makes anything a string)
        return str(content)


def to_msg(context: RequestContext) -> Msg:
    """The ``Msg`` the agent gets for an A2A request: the text parts joined (else the data parts),
    role ``user``, the A2A ids in ``metadata["a2a"]`` (and the message's own metadata)."""
    message = context.message
    texts: list[str] = []
    data: list[Any] = []
    urls: list[str] = []
    if message is not None:
        for part in message.parts:
            kind = part.WhichOneof("content")
            if kind == "text":
                texts.append(part.text)
            elif kind == "data":
                data.append(_ints(MessageToDict(part).get("data")))
            elif kind == "url":
                urls.append(part.url)
    content: Any = "\n".join(texts) if texts or not data else (data[0] if len(data) == 1 else data)
    meta: dict[str, Any] = {"a2a": {
        "task_id": context.task_id, "context_id": context.context_id,
        "message_id": message.message_id if message is not None else None,
    }}
    extra = context.metadata
    if extra:
        meta["a2a"]["metadata"] = extra
    return Msg("user", content, role="user", url=urls or None, metadata=meta)


def _ints(value: Any) -> Any:
    """JSON numbers of a data part come as floats (protobuf's Value): whole ones back to ints."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value


class MeshExecutor(AgentExecutor):
    """Runs one A2A request as a call of the mesh agent that ``resolve()`` returns (its proxy)."""

    def __init__(self, resolve: Callable[[], Any], server: str) -> None:
        self._resolve = resolve
        self._server = server
        self._running: dict[str, Any] = {}  # A2A task id -> the mesh call (to cancel it)

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task_id, context_id = str(context.task_id), str(context.context_id)
        updater = TaskUpdater(event_queue, task_id, context_id)
        if context.current_task is None and context.message is not None:
            await event_queue.enqueue_event(Task(
                id=task_id, context_id=context_id, status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED),
                history=[context.message],
            ))
        agent = self._resolve()
        if agent is None:
            await updater.failed(_agent_message("the agent is gone from this server", context_id, task_id))
            return
        headers = context.call_context.state.get("headers") or {}
        artifact = uuid.uuid4().hex
        parts: list[str] = []
        meta: dict[str, Any] = {"mesh_server": self._server}

        def started(call: Any) -> None:
            self._running[task_id] = call
            task = getattr(call, "_mesh_task", None)
            if isinstance(task, str):
                meta["mesh_task"] = task

        await updater.start_work()
        try:
            async for item in reply_chunks(agent, to_msg(context), headers.get("traceparent"), started):
                text = as_text(item)
                await updater.add_artifact(
                    [Part(text=text)], artifact_id=artifact, name="reply", append=bool(parts), last_chunk=False,
                )
                parts.append(text)
        except Exception as exc:  # noqa: BLE001 - the agent's failure is the task's
            log.info("A2A task %s failed: %s: %s", task_id, type(exc).__name__, exc)
            message = _agent_message(f"{type(exc).__name__}: {exc}", context_id, task_id)
            await updater.update_status(TaskState.TASK_STATE_FAILED, message=message, metadata=meta)
            return
        finally:
            self._running.pop(task_id, None)
        message = _agent_message("".join(parts), context_id, task_id)
        await updater.update_status(TaskState.TASK_STATE_COMPLETED, message=message, metadata=meta)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        call = self._running.pop(str(context.task_id), None)
        # on the type: a Placeholder resolves unknown attributes by waiting for its value
        cancel = getattr(type(call), "cancel", None)
        if callable(cancel):  # the mesh call (once futures can be cancelled)
            try:
                cancel(call)
            except Exception as exc:  # noqa: BLE001
                log.debug("could not cancel the mesh call of task %s: %s", context.task_id, exc)
        updater = TaskUpdater(event_queue, str(context.task_id), str(context.context_id))
        await updater.cancel()


def _agent_message(text: str, context_id: str, task_id: str) -> Message:
    return Message(
        role=Role.ROLE_AGENT, parts=[Part(text=text)], message_id=uuid.uuid4().hex, context_id=context_id,
        task_id=task_id,
    )


class BoundedTaskStore(InMemoryTaskStore):
    """The SDK's in-memory task store, holding at most ``max_tasks`` tasks (the oldest go first):
    an edge that answers for months must not keep every task it ever ran."""

    def __init__(self, max_tasks: int = 1000) -> None:
        super().__init__()
        self.max_tasks = max_tasks
        self._order: collections.OrderedDict[str, Any] = collections.OrderedDict()  # task id -> its context

    async def save(self, task: Task, context: Any) -> None:  # type: ignore[override]
        await super().save(task, context)
        self._order[task.id] = context
        self._order.move_to_end(task.id)
        while len(self._order) > self.max_tasks:
            old, old_context = self._order.popitem(last=False)
            try:
                await super().delete(old, old_context)
            except Exception as exc:  # noqa: BLE001  (already gone)
                log.debug("could not drop task %s: %s", old, exc)
