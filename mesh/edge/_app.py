"""The edge's ASGI application: routes, and the guard in front of them.

The guard (:class:`Guard`) runs before any route: a request without the right bearer token (when
the edge has one) gets 401 and nothing else happens; a body larger than ``max_body``, or one that
does not arrive within ``body_timeout``, gets 413 / 408 before the route sees a byte of it. The
whole body is read first, so a route never waits on a slow client in the middle of a call.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mesh.edge._agents import AgentDirectory
from mesh.edge._metrics import CONTENT_TYPE_LATEST, Metrics

__all__ = ["Guard", "build_app"]

Scope = dict[str, Any]
ASGI = Callable[[Scope, Callable, Callable], Awaitable[None]]


class Guard:
    """ASGI middleware: bearer token, bounded body read in full with a deadline, status counts."""

    def __init__(self, app: ASGI, *, token: str | None, max_body: int, body_timeout: float = 30.0) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.codes: dict[int, int] = {}

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counted_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                code = message["status"]
                self.codes[code] = self.codes.get(code, 0) + 1
            await send(message)

        if self.expected is not None and not self._authorized(scope):
            await _error(counted_send, 401, "missing or wrong bearer token (Authorization: Bearer TOKEN)",
                         {"www-authenticate": 'Bearer realm="zmq-agent-mesh"'})
            return
        length = _content_length(scope)
        if length is not None and length > self.max_body:
            await _error(counted_send, 413, f"request body of {length} bytes exceeds the limit of {self.max_body}")
            return
        try:
            body = await asyncio.wait_for(self._read_body(receive), self.body_timeout)
        except asyncio.TimeoutError:
            await _error(counted_send, 408, f"request body not received within {self.body_timeout:g} s")
            return
        except _TooLarge:
            await _error(counted_send, 413, f"request body exceeds the limit of {self.max_body} bytes")
            return
        except _Disconnected:
            return
        await self.app(scope, _replay(body, receive), counted_send)

    def _authorized(self, scope: Scope) -> bool:
        for key, value in scope.get("headers", ()):
            if key == b"authorization":
                return hmac.compare_digest(value, self.expected)  # type: ignore[arg-type]
        return False

    async def _read_body(self, receive: Callable) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(body: bytes, receive: Callable) -> Callable:
    """A ``receive`` that gives the body read already, then waits on the client (disconnects)."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _error(send: Callable, status: int, why: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": why}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def build_app(directory: AgentDirectory, *, token: str | None, max_body: int) -> Guard:
    """The edge's application: ``/healthz``, ``/metrics``, ``/a2a/`` and each agent's routes."""
    servicer = directory.servicer
    guard: Guard

    async def healthz(request: Request) -> Response:
        status = servicer.status()
        ok = bool(servicer.accepting)
        return JSONResponse({"ok": ok, "address": directory.address, **status}, status_code=200 if ok else 503)

    metrics = Metrics(servicer.status, lambda: dict(guard.codes))

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def agents(request: Request) -> Response:
        return JSONResponse({"agents": directory.listing()})

    async def card(request: Request) -> Response:
        name = request.path_params["name"]
        actor = directory.find(name)
        if actor is None:
            return _not_found(name)
        # the SDK's serializer: the 1.0 card with the 0.3 fields merged in (url, protocolVersion...)
        return JSONResponse(agent_card_to_dict(directory.card(name, actor, str(request.base_url))))

    async def rpc(request: Request) -> Response:
        name = request.path_params["name"]
        actor = directory.find(name)
        if actor is None:
            return _not_found(name)
        dispatcher = directory.endpoint(name, actor, str(request.base_url))
        return await dispatcher.handle_requests(request)

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
        Route("/a2a/", agents, methods=["GET"]),
        Route("/a2a/{name}/.well-known/agent-card.json", card, methods=["GET"]),
        Route("/a2a/{name}/.well-known/agent.json", card, methods=["GET"]),  # A2A before 0.3
        Route("/a2a/{name}/", rpc, methods=["POST"]),
        Route("/a2a/{name}", rpc, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    guard = Guard(app, token=token, max_body=max_body)
    return guard


def _not_found(name: str) -> Response:
    return JSONResponse({"error": f"no agent named {name!r} on this server (see GET /a2a/)"}, status_code=404)
