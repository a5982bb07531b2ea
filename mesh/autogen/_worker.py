"""``MeshWorkerRuntime``: an ``autogen_core.AgentRuntime`` whose workers talk to each other directly.

Each worker runs an in-process mesh server that hosts its :class:`~._endpoint.Endpoint`. It joins
the host's :class:`~._directory.Directory` (by address, or by discovery), gets the table of workers,
agent types and subscriptions, and from then on sends every publish and ``send_message`` straight
to the workers that hold the recipients. The host can be stopped or frozen without stopping them.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import queue
import signal
import socket
import sys
import threading
import traceback
import uuid
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from autogen_core import (
    JSON_DATA_CONTENT_TYPE,
    Agent,
    AgentId,
    AgentInstantiationContext,
    AgentMetadata,
    AgentType,
    CancellationToken,
    MessageContext,
    MessageHandlerContext,
    MessageSerializer,
    Subscription,
    TopicId,
    try_get_known_serializers_for_type,
)

import mesh

from . import _bridge, _wire
from ._endpoint import Endpoint, register_runtime, unregister_runtime
from ._errors import MessageSerializationError, UnknownAgentType, WorkerUnavailable

__all__ = ["MeshWorkerRuntime"]

log = logging.getLogger("mesh.autogen")

T = TypeVar("T", bound=Agent)

_BATCH = 256  # most items in one delivery call
_JSON_VALUE = "mesh.autogen.json"  # type name of a plain JSON value (None, str, number, list, dict) as a result
_MAX_TEXT = 64 * 1024


def heartbeat_default() -> float:
    try:
        return float(os.environ.get("MESH_HEARTBEAT_TIMEOUT", "3"))
    except ValueError:
        return 3.0


def split_address(address: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``"host:port"``, ``"tcp://host:port"``, ``"[::1]:port"`` -> (host, port)."""
    text = str(address).strip()
    if text.startswith("tcp://"):
        text = text[len("tcp://"):]
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError(f"address {address!r} is not host:port")
    host = host.strip("[]") or default_host
    if host == "localhost":
        host = "127.0.0.1"
    return host, int(port)


def local_ip_towards(host: str, port: int) -> str:
    """The address of this machine's interface that routes to ``host`` (loopback for loopback)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError:
        return "127.0.0.1"
    family, _, _, _, sockaddr = infos[0]
    if sockaddr[0].startswith("127.") or sockaddr[0] == "::1":
        return sockaddr[0]
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect(sockaddr)
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


class _Serializers:
    """AutoGen's serializer registry: (type name, content type) -> serializer."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], MessageSerializer[Any]] = {}

    def add(self, serializer: MessageSerializer[Any] | Sequence[MessageSerializer[Any]]) -> None:
        if isinstance(serializer, Sequence):
            for s in serializer:
                self.add(s)
            return
        self._by_key[(serializer.type_name, serializer.data_content_type)] = serializer

    def get(self, type_name: str, content_type: str) -> MessageSerializer[Any] | None:
        return self._by_key.get((type_name, content_type))


def type_name_of(message: Any) -> str:
    """AutoGen's type name: a protobuf's full name, otherwise the class name."""
    cls = type(message)
    descriptor = getattr(cls, "DESCRIPTOR", None)
    full_name = getattr(descriptor, "full_name", None)
    if isinstance(full_name, str) and hasattr(message, "SerializeToString"):
        return full_name
    return cls.__name__


class _Link:
    """Everything this worker sends to one other worker: one sender thread (so the order of sends is
    the order of deliveries) and one thread that collects acknowledgements."""

    def __init__(self, runtime: MeshWorkerRuntime, wid: str, endpoint: Any) -> None:
        self.runtime = runtime
        self.wid = wid
        self.endpoint = endpoint
        self._out: queue.SimpleQueue = queue.SimpleQueue()
        self._acks: queue.SimpleQueue = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send_loop, name=f"autogen-send-{wid[:8]}", daemon=True)
        self._reaper = threading.Thread(target=self._ack_loop, name=f"autogen-ack-{wid[:8]}", daemon=True)
        self._sender.start()
        self._reaper.start()

    def put(self, item: dict, on_error: Callable[[BaseException], None] | None = None) -> None:
        self._out.put((item, on_error))

    def close(self) -> None:
        self._out.put(None)

    def join(self, timeout: float) -> None:
        self._sender.join(timeout)
        self._reaper.join(timeout)

    def _send_loop(self) -> None:
        while True:
            first = self._out.get()
            if first is None:
                self._acks.put(None)
                return
            batch = [first]
            stop = False
            while len(batch) < _BATCH:
                try:
                    nxt = self._out.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            try:
                fut = self.endpoint.deliver([item for item, _ in batch])
            except Exception as exc:
                self._failed(batch, exc)
            else:
                self._acks.put((fut, batch))
            if stop:
                self._acks.put(None)
                return

    def _ack_loop(self) -> None:
        while True:
            got = self._acks.get()
            if got is None:
                return
            fut, batch = got
            try:
                fut.result(timeout=2 * self.runtime._hb + 5)
            except Exception as exc:
                self._failed(batch, exc)

    def _failed(self, batch: list, exc: BaseException) -> None:
        log.warning("autogen: delivery of %d item(s) to worker %s failed: %s", len(batch), self.wid, exc)
        for _, on_error in batch:
            if on_error is not None:
                on_error(exc)


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
        poll_interval: seconds between the worker's refreshes of the directory table.
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
    ) -> None:
        from autogen_core import PROTOBUF_DATA_CONTENT_TYPE

        if payload_serialization_format not in {JSON_DATA_CONTENT_TYPE, PROTOBUF_DATA_CONTENT_TYPE}:
            raise ValueError(f"Unsupported payload serialization format: {payload_serialization_format}")
        self._host_address = host_address
        self._fmt = payload_serialization_format
        self._bind_host = bind_host
        self._hb = float(heartbeat_timeout) if heartbeat_timeout is not None else heartbeat_default()
        self._join_timeout = float(join_timeout)
        self._capacity = int(capacity)
        self._poll_interval = float(poll_interval)
        self.worker_id = uuid.uuid4().hex
        self._serializers = _Serializers()
        self._factories: dict[str, Callable[[], Awaitable[Agent]]] = {}
        self._instance_types: dict[str, type] = {}
        self._agents: dict[AgentId, Agent] = {}
        self._creating: dict[AgentId, asyncio.Future] = {}
        self._subs: dict[str, Subscription] = {}  # this worker's own, by id
        self._table: dict[str, Any] = {"epoch": None, "version": -1, "workers": {}}
        self._table_lock = threading.Lock()
        self._recipients_cache: dict[TopicId, list[AgentId]] = {}
        self._links: dict[str, _Link] = {}
        self._pending: dict[str, tuple[asyncio.Future, str]] = {}
        self._remote_tokens: dict[str, CancellationToken] = {}
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._endpoint: Any = None
        self._directory: Any = None
        self._running = False
        self._stop_event = threading.Event()
        self._threads: list[threading.Thread] = []
        self._token = uuid.uuid4().hex

    # ================================================================== lifetime
    async def start(self) -> None:
        """Start this worker's mesh server and join the host's directory."""
        if self._running:
            raise ValueError("Runtime is already running.")
        self._loop = asyncio.get_running_loop()
        self._stop_event.clear()
        await _bridge.blocking(self._start_blocking)
        self._running = True
        for target, name in ((self._poll_loop, "autogen-poll"), (self._watch_loop, "autogen-watch")):
            t = threading.Thread(target=target, name=f"{name}-{self.worker_id[:8]}", daemon=True)
            t.start()
            self._threads.append(t)

    def _start_blocking(self) -> None:
        directory = self._find_directory()
        info = directory.info()
        dhost, dport = split_address(info["address"])
        bind = self._bind_host or local_ip_towards(dhost, dport)
        server = mesh.AgentServer(host=bind, port=0, capacity=self._capacity, advertise=False,
                                  name=f"autogen-worker-{self.worker_id[:8]}")
        server.launch(in_subprocess=False)
        try:
            register_runtime(self._token, self)
            self._endpoint = Endpoint(self._token, to_dist={"host": server.host, "port": server.port})
            self._server = server
            self._directory = directory
            self._apply_table(directory.join(self.worker_id, self._endpoint, self._my_info()))
        except BaseException:
            unregister_runtime(self._token)
            server.shutdown()
            self._server = None
            raise

    def _find_directory(self) -> Any:
        import time

        deadline = time.monotonic() + self._join_timeout
        last: BaseException | None = None
        while True:
            try:
                if self._host_address is None:
                    return mesh.get(_wire.DIRECTORY_NAME, timeout=1.0)
                host, port = split_address(self._host_address)
                return mesh.get(_wire.DIRECTORY_NAME, host=host, port=port)
            except mesh.AuthenticationError:
                raise
            except mesh.MeshError as exc:
                last = exc
            if time.monotonic() >= deadline:
                where = self._host_address or "any discovered mesh server"
                raise mesh.ServerUnavailable(f"no autogen host (directory) found at {where}: {last}") from last
            self._stop_event.wait(0.2)

    def _my_info(self) -> dict[str, Any]:
        return {
            "address": self._server.address if self._server is not None else "",
            "types": list(self._factories),
            "subs": [_wire.encode_sub(s) for s in self._subs.values()],
        }

    async def stop(self) -> None:
        """Leave the directory and stop at once (running handlers are cancelled)."""
        if not self._running:
            raise RuntimeError("Runtime is not running.")
        self._running = False
        self._stop_event.set()
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for fut, _ in list(self._pending.values()):
            if not fut.done():
                fut.set_exception(WorkerUnavailable("the runtime stopped before the answer came"))
        self._pending.clear()
        await _bridge.blocking(self._stop_blocking)
        for agent in list(self._agents.values()):
            try:
                await agent.close()
            except Exception:
                log.exception("autogen: closing agent %s", agent.id)

    def _stop_blocking(self) -> None:
        directory, self._directory = self._directory, None
        if directory is not None:
            leaver = threading.Thread(target=_quiet, args=(directory.leave, self.worker_id), daemon=True)
            leaver.start()
            leaver.join(self._hb + 1)  # a frozen host must not hold the stop
        for link in list(self._links.values()):
            link.close()
        for link in list(self._links.values()):
            link.join(2.0)
        self._links.clear()
        for t in self._threads:
            t.join(self._hb + 2)
        self._threads.clear()
        unregister_runtime(self._token)
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()

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
            tasks = [t for t in self._tasks if t is not asyncio.current_task()]
            if not tasks and not self._pending:
                break
            await asyncio.gather(*tasks, return_exceptions=True)
            if not tasks:
                await asyncio.sleep(0.01)
        await self.stop()

    # ================================================================== directory table
    def _apply_table(self, table: Any) -> None:
        if not isinstance(table, dict) or not isinstance(table.get("workers"), dict):
            log.warning("autogen: ignoring a malformed directory table")
            return
        with self._table_lock:
            cur = self._table
            if table.get("epoch") == cur.get("epoch") and int(table.get("version", 0)) <= int(cur.get("version", -1)):
                return
            workers: dict[str, Any] = {}
            for wid, w in table["workers"].items():
                if wid == self.worker_id:
                    continue
                try:
                    subs = [_wire.decode_sub(s) for s in w.get("subs", [])]
                    workers[str(wid)] = {"endpoint": w["endpoint"], "types": [str(t) for t in w.get("types", [])],
                                         "subs": subs, "sub_keys": [_wire.sub_key(s) for s in w.get("subs", [])]}
                except Exception as exc:
                    log.warning("autogen: ignoring worker %s in the directory table: %s", wid, exc)
            self._table = {"epoch": table.get("epoch"), "version": int(table.get("version", 0)), "workers": workers,
                           "listed_self": self.worker_id in table["workers"]}
            self._recipients_cache = {}

    def _poll_loop(self) -> None:
        while not self._stop_event.wait(self._poll_interval):
            directory = self._directory
            if directory is None:
                return
            try:
                table = directory.table()
                self._apply_table(table)
                if self.worker_id not in table.get("workers", {}) and self._running:
                    log.info("autogen: worker %s not listed by the directory; joining again", self.worker_id)
                    self._apply_table(directory.join(self.worker_id, self._endpoint, self._my_info()))
            except Exception as exc:  # host stopped or frozen: the table we have keeps working
                log.debug("autogen: directory refresh failed: %s", exc)

    def _holders(self, agent_type: str) -> list[str]:
        """Workers (ids, sorted) that registered ``agent_type``, this one included."""
        with self._table_lock:
            out = [wid for wid, w in self._table["workers"].items() if agent_type in w["types"]]
        if agent_type in self._factories:
            out.append(self.worker_id)
        return sorted(out)

    def _owner(self, agent_id: AgentId) -> str | None:
        if agent_id in self._agents:
            return self.worker_id
        return _wire.owner(agent_id.type, agent_id.key, self._holders(agent_id.type))

    def _recipients(self, topic_id: TopicId) -> list[AgentId]:
        cached = self._recipients_cache.get(topic_id)
        if cached is not None:
            return cached
        seen_subs: set[tuple[str, str, str]] = set()
        out: list[AgentId] = []
        seen: set[AgentId] = set()
        with self._table_lock:
            sources = [(list(self._subs.values()), [_wire.sub_key(_wire.encode_sub(s)) for s in self._subs.values()])]
            sources += [(w["subs"], w["sub_keys"]) for w in self._table["workers"].values()]
        for subs, keys in sources:
            for sub, key in zip(subs, keys, strict=True):
                if key in seen_subs or not sub.is_match(topic_id):
                    continue
                seen_subs.add(key)
                agent_id = sub.map_to_agent(topic_id)
                if agent_id not in seen:
                    seen.add(agent_id)
                    out.append(agent_id)
        self._recipients_cache[topic_id] = out
        return out

    def _link(self, wid: str, endpoint: Any = None) -> _Link | None:
        link = self._links.get(wid)
        if link is not None:
            return link
        if endpoint is None:
            with self._table_lock:
                w = self._table["workers"].get(wid)
            if w is None:
                return None
            endpoint = w["endpoint"]
        link = self._links[wid] = _Link(self, wid, endpoint)
        return link

    # ================================================================== serialization
    def add_message_serializer(self, serializer: MessageSerializer[Any] | Sequence[MessageSerializer[Any]]) -> None:
        self._serializers.add(serializer)

    def _encode(self, message: Any) -> tuple[str, str, bytes]:
        type_name = type_name_of(message)
        serializer = self._serializers.get(type_name, self._fmt)
        if serializer is None:  # a dataclass, pydantic model or protobuf: AutoGen knows how; learn it once
            known = try_get_known_serializers_for_type(type(message))
            self._serializers.add(known)
            serializer = self._serializers.get(type_name, self._fmt)
        if serializer is None:
            raise MessageSerializationError(
                f"no serializer registered for message type {type_name!r} (content type {self._fmt}): messages "
                "travel encoded by AutoGen's serializers; use a dataclass or a pydantic model, or register one "
                "with runtime.add_message_serializer(...)"
            )
        return type_name, self._fmt, serializer.serialize(message)

    def _decode(self, type_name: str, content_type: str, data: bytes) -> Any:
        if type_name == _JSON_VALUE:
            import json

            return json.loads(data)
        serializer = self._serializers.get(type_name, content_type)
        if serializer is None:
            from autogen_core import UnknownPayload

            return UnknownPayload(type_name, content_type, data)
        return serializer.deserialize(data)

    def _encode_result(self, value: Any) -> tuple[str, str, bytes]:
        if value is None or isinstance(value, (str, int, float, bool)):
            import json

            return _JSON_VALUE, JSON_DATA_CONTENT_TYPE, json.dumps(value).encode()
        type_name, ct, data = self._encode(value)
        return type_name, ct, data

    def _learn(self, type_name: str, content_type: str, where: Any) -> None:
        """A result's type this worker has no serializer for: when the caller has that class already
        imported (``module:qualname`` sent along, looked up in ``sys.modules`` only: nothing is imported
        on a peer's say-so), learn AutoGen's serializer for it, so ``send_message`` returns the object."""
        if not isinstance(where, str) or ":" not in where:
            return
        module_name, _, qualname = where.partition(":")
        obj: Any = sys.modules.get(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part, None) if obj is not None else None
        if isinstance(obj, type):
            known = [k for k in try_get_known_serializers_for_type(obj)
                     if k.type_name == type_name and k.data_content_type == content_type]
            self._serializers.add(known)

    # ================================================================== publish / send
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
        message_id = message_id or str(uuid.uuid4())
        type_name, ct, data = self._encode(message)
        by_worker: dict[str, list[list[str]]] = {}
        local: list[AgentId] = []
        for agent_id in self._recipients(topic_id):
            if sender is not None and agent_id == sender:
                continue
            wid = self._owner(agent_id)
            if wid is None:
                log.debug("autogen: no worker holds agent type %s; %s not delivered", agent_id.type, agent_id)
            elif wid == self.worker_id:
                local.append(agent_id)
            else:
                by_worker.setdefault(wid, []).append(_wire.aid(agent_id))  # type: ignore[arg-type]
        for wid, recipients in by_worker.items():
            link = self._link(wid)
            if link is None:
                continue
            link.put({"k": "pub", "to": recipients, "sender": _wire.aid(sender), "topic": _wire.topic(topic_id),
                      "type": type_name, "ct": ct, "data": data, "id": message_id})
        if local:
            msg = self._decode(type_name, ct, data)  # each delivery gets its own copy, as across processes
            for agent_id in local:
                self._spawn(self._on_publish(agent_id, msg, sender, topic_id, message_id))

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
        message_id = message_id or str(uuid.uuid4())
        cancellation_token = cancellation_token or CancellationToken()
        type_name, ct, data = self._encode(message)
        wid = self._owner(recipient)
        if wid is None:
            raise UnknownAgentType(f"no worker in the mesh registered agent type {recipient.type!r} (recipient {recipient})")
        if wid == self.worker_id:
            msg = self._decode(type_name, ct, data)
            task = self._spawn(self._on_rpc(recipient, msg, sender, message_id, cancellation_token))
            cancellation_token.link_future(task)
            return await task
        link = self._link(wid)
        if link is None:
            raise WorkerUnavailable(f"worker {wid} holding {recipient} is not in the directory table")
        request_id = uuid.uuid4().hex
        assert self._loop is not None
        fut = self._loop.create_future()
        self._pending[request_id] = (fut, wid)
        loop = self._loop

        def on_error(exc: BaseException) -> None:
            loop.call_soon_threadsafe(self._fail_pending, request_id, exc)

        link.put({"k": "rpc", "rid": request_id, "reply": self._endpoint, "from": self.worker_id,
                  "to": _wire.aid(recipient), "sender": _wire.aid(sender), "type": type_name, "ct": ct,
                  "data": data, "id": message_id}, on_error)

        def on_cancel() -> None:
            if not fut.done():
                fut.cancel()
                link.put({"k": "cancel", "rid": request_id})

        cancellation_token.add_callback(on_cancel)
        try:
            return await fut
        finally:
            self._pending.pop(request_id, None)

    def _fail_pending(self, request_id: str, exc: BaseException) -> None:
        entry = self._pending.pop(request_id, None)
        if entry is None or entry[0].done():
            return
        fut, wid = entry
        if not isinstance(exc, mesh.ServerUnavailable):
            exc = WorkerUnavailable(f"worker {wid} cannot be reached: {exc}")
        fut.set_exception(exc)

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ================================================================== receiving (mesh threads -> loop)
    def _receive(self, batch: Any) -> int:
        if not isinstance(batch, list):
            log.warning("autogen: dropped a malformed delivery (%s)", type(batch).__name__)
            return 0
        loop = self._loop
        if loop is None or loop.is_closed() or not self._running:
            raise mesh.AgentNotFound("this autogen worker runtime is not running")
        loop.call_soon_threadsafe(self._dispatch, batch)
        return len(batch)

    def _dispatch(self, batch: list) -> None:
        for item in batch:
            try:
                kind = item["k"]
                if kind == "pub":
                    msg = self._decode(str(item["type"]), str(item["ct"]), bytes(item["data"]))
                    sender, topic_id = _wire.unaid(item["sender"]), _wire.untopic(item["topic"])
                    for to in item["to"]:
                        self._spawn(self._on_publish(_wire.unaid(to), msg, sender, topic_id, str(item["id"])))
                elif kind == "rpc":
                    self._spawn(self._serve_rpc(item))
                elif kind == "resp":
                    self._on_response(item)
                elif kind == "cancel":
                    token = self._remote_tokens.get(str(item["rid"]))
                    if token is not None:
                        token.cancel()
                elif kind == "ctl":
                    self._spawn(self._serve_ctl(item))
                else:
                    raise ValueError(f"unknown kind {kind!r}")
            except Exception as exc:
                log.warning("autogen: dropped a malformed delivery item: %s", exc)

    async def _on_publish(self, agent_id: AgentId | None, message: Any, sender: AgentId | None,
                          topic_id: TopicId | None, message_id: str) -> None:
        assert agent_id is not None
        try:
            agent = await self._get_agent(agent_id)
            ctx = MessageContext(sender=sender, topic_id=topic_id, is_rpc=False,
                                 cancellation_token=CancellationToken(), message_id=message_id)
            with MessageHandlerContext.populate_context(agent.id):
                await agent.on_message(message, ctx=ctx)
        except asyncio.CancelledError:
            raise
        except BaseException:
            log.error("autogen: error processing publish message for %s", agent_id, exc_info=True)

    async def _on_rpc(self, recipient: AgentId, message: Any, sender: AgentId | None, message_id: str,
                      token: CancellationToken) -> Any:
        agent = await self._get_agent(recipient)
        ctx = MessageContext(sender=sender, topic_id=None, is_rpc=True, cancellation_token=token, message_id=message_id)
        with MessageHandlerContext.populate_context(agent.id):
            return await agent.on_message(message, ctx=ctx)

    async def _serve_rpc(self, item: dict) -> None:
        rid = str(item["rid"])
        reply = {"k": "resp", "rid": rid}
        token = CancellationToken()
        self._remote_tokens[rid] = token
        try:
            msg = self._decode(str(item["type"]), str(item["ct"]), bytes(item["data"]))
            recipient = _wire.unaid(item["to"])
            assert recipient is not None
            if recipient.type not in self._factories and recipient not in self._agents:
                raise UnknownAgentType(f"agent type {recipient.type!r} is not registered on worker {self.worker_id}")
            handler = asyncio.ensure_future(
                self._on_rpc(recipient, msg, _wire.unaid(item["sender"]), str(item["id"]), token))
            token.link_future(handler)  # the caller's cancel (a "cancel" item) stops the handler here
            result = await handler
            reply["type"], reply["ct"], reply["data"] = self._encode_result(result)
            cls = result.__class__
            reply["py"] = f"{cls.__module__}:{cls.__qualname__}"
        except asyncio.CancelledError:
            reply["error"] = {"type": "asyncio.CancelledError", "message": "cancelled", "traceback": ""}
        except BaseException as exc:
            reply["error"] = _error_dict(exc)
        finally:
            self._remote_tokens.pop(rid, None)
        self._reply(str(item.get("from", "")), item.get("reply"), reply)

    def _reply(self, wid: str, endpoint: Any, reply: dict) -> None:
        link = self._link(wid, endpoint)
        if link is not None:
            link.put(reply)

    def _on_response(self, item: dict) -> None:
        entry = self._pending.pop(str(item["rid"]), None)
        if entry is None:
            return
        fut, _ = entry
        if fut.done():
            return
        error = item.get("error")
        if error is not None:
            fut.set_exception(_rebuild_error(error))
            return
        try:
            type_name, ct = str(item["type"]), str(item["ct"])
            if self._serializers.get(type_name, ct) is None:
                self._learn(type_name, ct, item.get("py"))
            fut.set_result(self._decode(type_name, ct, bytes(item["data"])))
        except Exception as exc:
            fut.set_exception(exc)

    # ================================================================== control (state, metadata) across the mesh
    async def _serve_ctl(self, item: dict) -> None:
        reply: dict[str, Any] = {"k": "resp", "rid": str(item["rid"])}
        try:
            value = await self._ctl_local(str(item["op"]), item.get("arg"))
            import json

            reply["type"], reply["ct"], reply["data"] = _JSON_VALUE, JSON_DATA_CONTENT_TYPE, json.dumps(value).encode()
        except BaseException as exc:
            reply["error"] = _error_dict(exc)
        self._reply(str(item.get("from", "")), item.get("reply"), reply)

    async def _ctl_local(self, op: str, arg: Any) -> Any:
        if op == "save_all":
            return {str(a): dict(await agent.save_state()) for a, agent in list(self._agents.items())}
        if op == "load_all":
            for key, state in dict(arg).items():
                agent_id = AgentId.from_str(key)
                if agent_id.type in self._factories or agent_id in self._agents:
                    await (await self._get_agent(agent_id)).load_state(state)
            return None
        agent_id = _wire.unaid(arg["agent"])
        assert agent_id is not None
        agent = await self._get_agent(agent_id)
        if op == "save":
            return dict(await agent.save_state())
        if op == "load":
            await agent.load_state(arg["state"])
            return None
        if op == "metadata":
            return dict(agent.metadata)
        raise ValueError(f"unknown control operation {op!r}")

    async def _ctl(self, wid: str, op: str, arg: Any) -> Any:
        if wid == self.worker_id:
            return await self._ctl_local(op, arg)
        link = self._link(wid)
        if link is None:
            raise WorkerUnavailable(f"worker {wid} is not in the directory table")
        assert self._loop is not None
        request_id = uuid.uuid4().hex
        fut = self._loop.create_future()
        self._pending[request_id] = (fut, wid)
        loop = self._loop
        link.put({"k": "ctl", "rid": request_id, "reply": self._endpoint, "from": self.worker_id, "op": op, "arg": arg},
                 lambda exc: loop.call_soon_threadsafe(self._fail_pending, request_id, exc))
        try:
            return await fut
        finally:
            self._pending.pop(request_id, None)

    def _require_owner(self, agent_id: AgentId) -> str:
        wid = self._owner(agent_id)
        if wid is None:
            raise UnknownAgentType(f"no worker in the mesh registered agent type {agent_id.type!r}")
        return wid

    async def save_state(self) -> Mapping[str, Any]:
        """The state of every instantiated agent on every worker, keyed by ``str(AgentId)``."""
        with self._table_lock:
            others = list(self._table["workers"])
        parts = await asyncio.gather(*(self._ctl(w, "save_all", None) for w in [self.worker_id, *others]))
        state: dict[str, Any] = {}
        for part in parts:
            state.update(part)
        return state

    async def load_state(self, state: Mapping[str, Any]) -> None:
        """Give each agent's state to the worker that holds (or will hold) that agent."""
        by_worker: dict[str, dict[str, Any]] = {}
        for key, value in state.items():
            agent_id = AgentId.from_str(key)
            wid = self._owner(agent_id)
            if wid is not None:
                by_worker.setdefault(wid, {})[key] = value
        await asyncio.gather(*(self._ctl(w, "load_all", part) for w, part in by_worker.items()))

    async def agent_metadata(self, agent: AgentId) -> AgentMetadata:
        return await self._ctl(self._require_owner(agent), "metadata", {"agent": _wire.aid(agent)})  # type: ignore[return-value]

    async def agent_save_state(self, agent: AgentId) -> Mapping[str, Any]:
        return await self._ctl(self._require_owner(agent), "save", {"agent": _wire.aid(agent)})

    async def agent_load_state(self, agent: AgentId, state: Mapping[str, Any]) -> None:
        await self._ctl(self._require_owner(agent), "load", {"agent": _wire.aid(agent), "state": dict(state)})

    # ================================================================== agents
    async def register_factory(
        self,
        type: str | AgentType,
        agent_factory: Callable[[], T | Awaitable[T]],
        *,
        expected_class: type[T] | None = None,
    ) -> AgentType:
        agent_type = AgentType(type) if isinstance(type, str) else type
        if agent_type.type in self._factories:
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

        self._factories[agent_type.type] = factory_wrapper
        self._recipients_cache = {}
        await self._tell_directory("register_type", agent_type.type)
        return agent_type

    async def register_agent_instance(self, agent_instance: Agent, agent_id: AgentId) -> AgentId:
        def agent_factory() -> Agent:
            raise RuntimeError(f"agent {agent_id.type} is registered as instances only; {agent_id} was not registered")

        if agent_id in self._agents:
            raise ValueError(f"Agent with id {agent_id} already exists.")
        if agent_id.type not in self._factories:
            self._factories[agent_id.type] = agent_factory  # type: ignore[assignment]
            self._instance_types[agent_id.type] = agent_instance.__class__
            await self._tell_directory("register_type", agent_id.type)
        elif self._instance_types.get(agent_id.type) is None:
            raise ValueError("Agent factories and agent instances cannot be registered to the same type.")
        elif self._instance_types[agent_id.type] is not agent_instance.__class__:
            raise ValueError("Agent instances must be the same object type.")
        await agent_instance.bind_id_and_runtime(id=agent_id, runtime=self)
        self._agents[agent_id] = agent_instance
        return agent_id

    async def _get_agent(self, agent_id: AgentId) -> Agent:
        agent = self._agents.get(agent_id)
        if agent is not None:
            return agent
        making = self._creating.get(agent_id)
        if making is not None:
            return await asyncio.shield(making)
        factory = self._factories.get(agent_id.type)
        if factory is None:
            raise LookupError(f"Agent with name {agent_id.type} not found.")
        assert self._loop is not None
        making = self._creating[agent_id] = self._loop.create_future()
        try:
            with AgentInstantiationContext.populate_context((self, agent_id)):  # type: ignore[arg-type]
                agent = await _call_factory(factory, self, agent_id)
            self._agents[agent_id] = agent
            making.set_result(agent)
            return agent
        except BaseException as exc:
            making.set_exception(exc)
            making.exception()  # retrieved: waiters (if any) get it; no "never retrieved" warning
            raise
        finally:
            self._creating.pop(agent_id, None)

    async def try_get_underlying_agent_instance(self, id: AgentId, type: type[T] = Agent) -> T:  # type: ignore[assignment]
        if id.type not in self._factories:
            raise LookupError(f"Agent with name {id.type} not found on this worker.")
        wid = self._owner(id)
        if wid != self.worker_id:
            raise LookupError(f"agent {id} lives on worker {wid}, not in this process")
        agent = await self._get_agent(id)
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

    # ================================================================== subscriptions
    async def add_subscription(self, subscription: Subscription) -> None:
        encoded = _wire.encode_sub(subscription)
        if any(s == subscription for s in self._subs.values()):
            raise ValueError("Subscription already exists")
        self._subs[subscription.id] = subscription
        self._recipients_cache = {}
        await self._tell_directory("add_subscription", encoded)

    async def remove_subscription(self, id: str) -> None:
        if id not in self._subs:
            raise ValueError("Subscription does not exist")
        del self._subs[id]
        self._recipients_cache = {}
        await self._tell_directory("remove_subscription", id)

    async def _tell_directory(self, method: str, arg: Any) -> None:
        directory = self._directory
        if directory is None:  # not started yet: join() will carry it
            return
        try:
            table = await _bridge.blocking(getattr(directory, method), self.worker_id, arg)
        except mesh.AgentNotFound:  # dropped by the directory (e.g. it thought us dead): join again
            table = await _bridge.blocking(directory.join, self.worker_id, self._endpoint, self._my_info())
        self._apply_table(table)

    # ================================================================== liveness of pending answers
    def _watch_loop(self) -> None:
        period = max(0.1, self._hb / 3)
        while not self._stop_event.wait(period):
            waiting = {wid for _, wid in list(self._pending.values())}
            if not waiting:
                continue
            pings = {}
            for wid in waiting:
                link = self._links.get(wid)
                if link is None:
                    continue
                try:
                    pings[wid] = link.endpoint.ping()
                except Exception as exc:
                    pings[wid] = exc
            for wid, fut in pings.items():
                try:
                    if isinstance(fut, BaseException):
                        raise fut
                    fut.result(timeout=self._hb)
                except Exception as exc:
                    self._fail_worker(wid, exc)

    def _fail_worker(self, wid: str, exc: BaseException) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        error = WorkerUnavailable(f"worker {wid} did not answer within {self._hb:g} s: {exc}")
        for rid, (_, w) in list(self._pending.items()):
            if w == wid:
                loop.call_soon_threadsafe(self._fail_pending, rid, error)

    # ================================================================== misc
    def __repr__(self) -> str:
        where = self._server.address if self._server is not None else "not started"
        return f"<MeshWorkerRuntime {self.worker_id[:8]} {where}>"


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


def _error_dict(exc: BaseException) -> dict[str, str]:
    cls = exc.__class__
    return {
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "message": str(exc)[:_MAX_TEXT],
        "traceback": "".join(traceback.format_exception(exc))[-_MAX_TEXT:],
    }


_error_classes: dict[type, type] = {}


def _rebuild_error(error: Any) -> BaseException:
    """A handler's exception, raised in the caller: a ``mesh.RemoteError`` that is also an instance of the
    handler's exception class when that class can be imported here (``except ValueError`` works)."""
    try:
        type_name, message, tb = str(error["type"]), str(error["message"]), str(error.get("traceback", ""))
    except Exception:
        return mesh.RemoteError("Exception", "malformed error from a peer")
    if type_name == "asyncio.CancelledError":
        return asyncio.CancelledError(message)
    module, _, qualname = type_name.rpartition(".")
    cls: Any = None
    try:
        import importlib

        obj: Any = importlib.import_module(module or "builtins")
        for part in qualname.split("."):
            obj = getattr(obj, part)
        cls = obj
    except Exception:
        cls = None
    short = qualname.rpartition(".")[2] or type_name
    if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, mesh.RemoteError):
        combined = _error_classes.get(cls)
        if combined is None:
            try:
                combined = type(f"Remote{cls.__name__}", (mesh.RemoteError, cls), {"__module__": "mesh.autogen"})
            except TypeError:
                combined = mesh.RemoteError
            _error_classes[cls] = combined
        try:
            return combined(short, message, tb)
        except Exception:
            pass
    return mesh.RemoteError(short, message, tb)


def _quiet(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception as exc:
        log.debug("autogen: %s failed: %s", getattr(fn, "__name__", fn), exc)
