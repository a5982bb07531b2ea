"""Acceptance tests of API.md, third pass: AutoGen programs using more of autogen_core (rpc/event handlers,
ClosureAgent, metadata, agents that message other agents), with only the runtime imports changed."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

pytest.importorskip("autogen_core")

from autogen_core import (  # noqa: E402
    AgentId,
    ClosureAgent,
    ClosureContext,
    DefaultTopicId,
    MessageContext,
    RoutedAgent,
    TopicId,
    TypeSubscription,
    default_subscription,
    event,
    rpc,
)

from mesh.autogen import MeshWorkerRuntime, MeshWorkerRuntimeHost  # noqa: E402
from conftest import free_port


@dataclass
class Question:
    text: str


@dataclass
class Answer:
    text: str


@dataclass
class Shout:
    text: str


@default_subscription
class Oracle(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("answers questions, hears shouts")

    @rpc
    async def on_question(self, message: Question, ctx: MessageContext) -> Answer:
        return Answer(f"{self.id.key} says {message.text[::-1]}")

    @event
    async def on_shout(self, message: Shout, ctx: MessageContext) -> None:
        await self.publish_message(Answer(f"heard {message.text} at {self.id.key}"), TopicId("results", "all"))


class Relay(RoutedAgent):
    """Asks an Oracle on another worker from inside its own handler."""

    def __init__(self) -> None:
        super().__init__("relays")

    @rpc
    async def on_question(self, message: Question, ctx: MessageContext) -> Answer:
        inner = await self.send_message(Question(message.text + "!"), AgentId("oracle", "deep"))
        return Answer("relay: " + inner.text)


async def _wait(cond, timeout=15.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not met")
        await asyncio.sleep(0.02)


def _run(coro, timeout=90):
    asyncio.run(asyncio.wait_for(coro, timeout))


def test_rpc_event_closure_agent_and_nested_sends_across_workers():
    address = f"127.0.0.1:{free_port()}"
    results: list[str] = []

    async def collect(_ctx: ClosureContext, message: Answer, ctx: MessageContext) -> None:
        results.append(message.text)

    async def main():
        host = MeshWorkerRuntimeHost(address=address)
        host.start()
        w1, w2 = MeshWorkerRuntime(host_address=address), MeshWorkerRuntime(host_address=address)
        await w1.start()
        await w2.start()
        try:
            await Oracle.register(w2, "oracle", lambda: Oracle())
            await Relay.register(w1, "relay", lambda: Relay())
            await ClosureAgent.register_closure(
                w1, "collector", collect, subscriptions=lambda: [TypeSubscription("results", "collector")])
            ans = await w1.send_message(Question("abc"), AgentId("oracle", "k"))
            assert ans == Answer("k says cba")
            relayed = await w2.send_message(Question("xy"), AgentId("relay", "r"))
            assert relayed == Answer("relay: deep says !yx")
            await w1.publish_message(Shout("hey"), DefaultTopicId())
            await _wait(lambda: results == ["heard hey at default"])
            meta = await w1.agent_metadata(AgentId("oracle", "k"))
            assert meta["type"] == "oracle" and meta["key"] == "k"
            assert "answers questions" in meta["description"]
        finally:
            await w1.stop()
            await w2.stop()
            await host.stop()

    _run(main())


def test_send_to_an_unregistered_type_is_an_error_not_a_hang():
    address = f"127.0.0.1:{free_port()}"

    async def main():
        host = MeshWorkerRuntimeHost(address=address)
        host.start()
        w = MeshWorkerRuntime(host_address=address)
        await w.start()
        try:
            with pytest.raises(Exception) as ei:
                await asyncio.wait_for(w.send_message(Question("?"), AgentId("nobody", "k")), 30)
            assert not isinstance(ei.value, asyncio.TimeoutError), "send_message hung"
            assert "nobody" in str(ei.value)
            await Oracle.register(w, "oracle", lambda: Oracle())  # and the worker goes on
            assert await w.send_message(Question("ok"), AgentId("oracle", "z")) == Answer("z says ko")
        finally:
            await w.stop()
            await host.stop()

    _run(main())


def test_try_get_underlying_agent_instance_of_a_local_agent():
    address = f"127.0.0.1:{free_port()}"

    async def main():
        host = MeshWorkerRuntimeHost(address=address)
        host.start()
        w = MeshWorkerRuntime(host_address=address)
        await w.start()
        try:
            await Oracle.register(w, "oracle", lambda: Oracle())
            await w.send_message(Question("a"), AgentId("oracle", "mine"))
            inst = await w.try_get_underlying_agent_instance(AgentId("oracle", "mine"), Oracle)
            assert isinstance(inst, Oracle) and inst.id == AgentId("oracle", "mine")
        finally:
            await w.stop()
            await host.stop()

    _run(main())
