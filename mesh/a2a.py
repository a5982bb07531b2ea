"""Agents of the Agent2Agent protocol, used like mesh agents (extra ``zmq-agent-mesh[http]``).

``mesh.a2a.remote_agent(url)`` returns a :class:`RemoteAgent`: ``agent(msg)`` / ``agent.reply(msg)``
send A2A ``message/send`` to the agent at ``url`` and return its answer as a :class:`mesh.Msg`,
so a mesh agent can call an external A2A agent (an AgentScope Runtime app, another mesh server's
HTTP edge, any A2A server) the way it calls a mesh agent. In asyncio code, ``await agent.areply(msg)``.

    echo = mesh.a2a.remote_agent("http://10.0.0.5:8080/a2a/echo/", token=TOKEN)
    print(echo(mesh.Msg("user", "hello")).content)

It speaks through the official ``a2a-sdk`` client (A2A 1.0, or 0.3 for agents whose card offers
only that), on one event loop thread of its own per process.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Coroutine
from typing import Any

try:
    import httpx
    from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
    from a2a.types import Message, Part, Role, SendMessageRequest
    from google.protobuf import struct_pb2
    from google.protobuf.json_format import MessageToDict, ParseDict
except ImportError as _exc:  # the extra is not installed: say which one to install
    raise ImportError(
        f"mesh.a2a needs the [http] extra ({_exc.name or _exc} is missing): pip install 'zmq-agent-mesh[http]'"
    ) from _exc

from mesh._errors import AuthenticationError, CallTimeout, MeshError, RemoteError, ServerUnavailable
from mesh._msg import Msg

__all__ = ["A2AError", "RemoteAgent", "remote_agent"]

_CARD_PATH = "/.well-known/agent-card.json"


class A2AError(RemoteError):
    """The A2A agent answered with an error, or its task ended failed, canceled or rejected."""

    def __init__(self, message: str, state: str = "") -> None:
        super().__init__("A2AError", message)
        self.state = state


def remote_agent(url: str, token: str | None = None, *, name: str | None = None, timeout: float = 60.0) -> RemoteAgent:
    """A proxy of the A2A agent at ``url`` (its base URL, or the URL of its agent card).

    Args:
        url: e.g. ``http://host:8080/a2a/echo/`` (a mesh server's edge) or any A2A agent's URL.
        token: bearer token sent with every request (``Authorization: Bearer TOKEN``).
        name: the proxy's ``.name``; default: the name on the agent's card.
        timeout: seconds a call may take.
    """
    return RemoteAgent(url, token, name=name, timeout=timeout)


class RemoteAgent:
    """An A2A agent seen as a mesh agent: ``reply`` / ``__call__`` take a ``Msg`` (or text) and
    return the agent's answer as a ``Msg`` (blocking; ``await areply(x)`` in asyncio code).

    The answer's ``content`` is the text of the task's artifacts (or of the reply message);
    ``metadata["a2a"]`` holds the A2A ``task_id``, ``context_id`` and final ``state``. Messages of
    one proxy share one A2A context (a conversation), started by the first answer. ``memory``
    and ``observe`` work as on ``AgentBase``. Failures raise ``mesh`` errors: ``AuthenticationError``
    (401/403), ``ServerUnavailable`` (cannot connect), ``CallTimeout``, :class:`A2AError`.
    """

    def __init__(self, url: str, token: str | None = None, *, name: str | None = None, timeout: float = 60.0) -> None:
        base = url[: -len(_CARD_PATH)] if url.endswith(_CARD_PATH) else url
        self.url = base if base.endswith("/") else base + "/"
        self.token = token
        self.timeout = timeout
        self.context_id: str | None = None
        self.memory: list[Msg] = []
        self._name = name
        self._client: Any = None
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- the agent's face
    @property
    def name(self) -> str:
        if self._name is None:
            self._name = _run(self._card(), self.timeout).name
        return self._name

    def reply(self, x: Msg | str | None = None) -> Msg:
        """Send ``x`` with ``message/send``; the answer as a ``Msg`` (waits for it)."""
        return _run(self.areply(x), self.timeout + 5)

    __call__ = reply

    async def areply(self, x: Msg | str | None = None) -> Msg:
        """``reply`` for asyncio code (on any loop; the HTTP exchange runs on the proxy's own loop)."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._send(x), _loop()))

    def observe(self, x: Msg | list[Msg] | None) -> None:
        if x is None:
            return
        self.memory.extend(x if isinstance(x, list) else [x])

    def __repr__(self) -> str:
        return f"<RemoteAgent {self._name or '?'} at {self.url}>"

    def __reduce__(self) -> tuple:  # travels as its address (and token): the client is made anew
        return (RemoteAgent, (self.url, self.token), {"_name": self._name, "timeout": self.timeout})

    def __setstate__(self, state: dict) -> None:
        self.__init__(self.url, self.token, name=state.get("_name"), timeout=state.get("timeout", 60.0))  # type: ignore[misc]

    # ---------------------------------------------------------------- the exchange
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def _card(self) -> Any:
        async with httpx.AsyncClient(headers=self._headers(), timeout=self.timeout) as http:
            try:
                return await A2ACardResolver(http, self.url.rstrip("/")).get_agent_card()
            except Exception as exc:
                raise _mesh_error(exc, self.url) from None

    async def _get_client(self) -> Any:
        if self._client is None:
            card = await self._card()
            if self._name is None:
                self._name = card.name
            http = httpx.AsyncClient(headers=self._headers(), timeout=self.timeout)
            self._client = ClientFactory(ClientConfig(streaming=False, httpx_client=http)).create(card)
        return self._client

    async def _send(self, x: Msg | str | None) -> Msg:
        client = await self._get_client()
        message = Message(role=Role.ROLE_USER, message_id=uuid.uuid4().hex, parts=[_part(x)])
        if self.context_id:
            message.context_id = self.context_id
        try:
            async for event in client.send_message(SendMessageRequest(message=message)):
                return self._answer(event)
        except MeshError:
            raise
        except Exception as exc:
            raise _mesh_error(exc, self.url) from None
        raise A2AError(f"{self.url} answered nothing")

    def _answer(self, event: Any) -> Msg:
        if event.HasField("message"):
            m = event.message
            self.context_id = m.context_id or self.context_id
            return Msg(self.name, _text(m.parts), metadata={"a2a": {"context_id": m.context_id, "task_id": m.task_id}})
        task = event.task
        self.context_id = task.context_id or self.context_id
        state = MessageToDict(task.status).get("state", "")
        text = "".join(_text(a.parts) for a in task.artifacts)
        if not text and task.status.HasField("message"):
            text = _text(task.status.message.parts)
        if state in ("TASK_STATE_FAILED", "TASK_STATE_CANCELED", "TASK_STATE_REJECTED"):
            raise A2AError(f"task {task.id} of {self.url} ended {state}: {text}", state)
        meta = {"a2a": {"task_id": task.id, "context_id": task.context_id, "state": state}}
        return Msg(self.name, text, metadata=meta)


def _part(x: Msg | str | None) -> Part:
    content = x.content if isinstance(x, Msg) else x
    if isinstance(content, (dict, list)):
        data = Part()
        data.data.CopyFrom(_value(content))
        return data
    if content is None:
        content = ""
    return Part(text=content if isinstance(content, str) else json.dumps(content, default=str))


def _value(content: Any) -> Any:
    return ParseDict(json.loads(json.dumps(content, default=str)), struct_pb2.Value())


def _text(parts: Any) -> str:
    out = []
    for p in parts:
        kind = p.WhichOneof("content")
        if kind == "text":
            out.append(p.text)
        elif kind == "data":
            out.append(json.dumps(MessageToDict(p).get("data"), ensure_ascii=False))
    return "".join(out)


def _mesh_error(exc: BaseException, url: str) -> MeshError:
    text = f"{type(exc).__name__}: {exc}"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status in (401, 403) or " 401" in text or " 403" in text or "Unauthorized" in text:
        return AuthenticationError(f"{url} refused the request (bearer token missing or wrong): {text}")
    if isinstance(exc, (httpx.TimeoutException, asyncio.TimeoutError)) or "Timeout" in type(exc).__name__:
        return CallTimeout(f"{url} did not answer in time: {text}")
    if isinstance(exc, httpx.TransportError) or isinstance(getattr(exc, "__cause__", None), httpx.TransportError):
        return ServerUnavailable(f"cannot reach {url}: {text}")
    return A2AError(f"{url}: {text}")


# ---------------------------------------------------------------- one loop thread per process
_loop_lock = threading.Lock()
_the_loop: asyncio.AbstractEventLoop | None = None


def _loop() -> asyncio.AbstractEventLoop:
    global _the_loop
    with _loop_lock:
        if _the_loop is None or _the_loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="mesh-a2a-client", daemon=True).start()
            _the_loop = loop
        return _the_loop


def _run(coro: Coroutine, timeout: float) -> Any:
    loop = _loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise RuntimeError("a RemoteAgent cannot be called synchronously from its own loop: await areply(x)")
    fut = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return fut.result(timeout)
    except TimeoutError:
        fut.cancel()
        raise CallTimeout(f"no answer within {timeout:g} s") from None
