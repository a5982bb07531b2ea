"""Acceptance tests of API.md: AutoGen's runtime on the mesh (mesh.autogen), written as for the gRPC runtime."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

pytest.importorskip("autogen_core")

from autogen_core import (  # noqa: E402
    AgentId,
    AgentRuntime,
    DefaultTopicId,
    MessageContext,
    RoutedAgent,
    TopicId,
    TypeSubscription,
    default_subscription,
    message_handler,
)

from mesh.autogen import MeshWorkerRuntime, MeshWorkerRuntimeHost  # noqa: E402
from conftest import free_port

RECEIVED: list = []


@dataclass
class Ping:
    text: str


@dataclass
class Pong:
    text: str


@default_subscription
class Echoer(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("echoes")

    @message_handler
    async def on_ping(self, message: Ping, ctx: MessageContext) -> Pong:
        RECEIVED.append((self.id.key, message.text))
        return Pong(f"pong {message.text} from {self.id.key}")


class Listener(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("listens")

    @message_handler
    async def on_ping(self, message: Ping, ctx: MessageContext) -> None:
        RECEIVED.append(("listener", message.text))


async def _wait(cond, timeout=10.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not met")
        await asyncio.sleep(0.02)


def test_runtime_methods_exist():
    for name in ("start", "stop", "stop_when_signal"):
        assert hasattr(MeshWorkerRuntimeHost, name), name
        assert hasattr(MeshWorkerRuntime, name), name
    for name in ("register_factory", "publish_message", "send_message", "add_subscription", "remove_subscription",
                 "get", "save_state", "load_state", "agent_save_state", "agent_load_state", "agent_metadata"):
        assert callable(getattr(MeshWorkerRuntime, name, None)), name


def test_grpc_style_program_two_workers_send_publish_and_host_stopped():
    RECEIVED.clear()
    address = f"127.0.0.1:{free_port()}"

    async def main():
        host = MeshWorkerRuntimeHost(address=address)
        host.start()
        w1 = MeshWorkerRuntime(host_address=address)
        w2 = MeshWorkerRuntime(host_address=address)
        assert isinstance(w1, AgentRuntime)
        await w1.start()
        await w2.start()
        try:
            await Echoer.register(w2, "echoer", lambda: Echoer())
            await Listener.register(w2, "listener", lambda: Listener())
            await w2.add_subscription(TypeSubscription("news", "listener"))
            reply = await w1.send_message(Ping("a"), AgentId("echoer", "k1"))
            assert isinstance(reply, Pong) and reply.text == "pong a from k1"
            await w1.publish_message(Ping("b"), DefaultTopicId())
            await w1.publish_message(Ping("c"), TopicId("news", "default"))
            await _wait(lambda: ("default", "b") in RECEIVED and ("listener", "c") in RECEIVED)
            agent = await w1.get("echoer", key="k2")
            assert agent == AgentId("echoer", "k2")
            state = await w2.save_state()
            assert isinstance(state, dict)
            await w2.load_state(state)
            # messages never pass through the host: it may stop, messages keep flowing
            await host.stop()
            reply = await asyncio.wait_for(w1.send_message(Ping("d"), AgentId("echoer", "k1")), 10)
            assert reply.text == "pong d from k1"
        finally:
            await w1.stop()
            await w2.stop()
            try:
                await host.stop()
            except Exception:
                pass

    asyncio.run(main())


def test_single_worker_sends_and_saves_agent_state():
    # host_address=None joins by discovery; with none found, a single worker still runs its own agents
    RECEIVED.clear()
    address = f"127.0.0.1:{free_port()}"

    async def main():
        host = MeshWorkerRuntimeHost(address=address)
        host.start()
        w = MeshWorkerRuntime(host_address=address)
        await w.start()
        try:
            await Echoer.register(w, "echoer", lambda: Echoer())
            reply = await w.send_message(Ping("solo"), AgentId("echoer", "x"))
            assert reply.text == "pong solo from x"
            saved = await w.agent_save_state(AgentId("echoer", "x"))
            await w.agent_load_state(AgentId("echoer", "x"), saved)
        finally:
            await w.stop()
            await host.stop()

    asyncio.run(main())
