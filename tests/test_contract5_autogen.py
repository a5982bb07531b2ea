"""Acceptance tests of API.md, fifth pass: ``mesh.autogen``'s worker answers misuse as autogen_core's
runtimes do (the same exception classes), and a handler sees who sent what, across workers.

"the worker implements autogen_core's AgentRuntime": a program that catches ``ValueError`` for a
type registered twice, or ``LookupError`` for an unknown agent, must go on doing so."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

pytest.importorskip("autogen_core")

from autogen_core import (  # noqa: E402
    AgentId,
    AgentRuntime,
    CancellationToken,
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

SEEN: list = []


@dataclass
class Ask:
    text: str


@default_subscription
class Relay(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("relays")

    @message_handler
    async def on_ask(self, message: Ask, ctx: MessageContext) -> Ask:
        SEEN.append((str(self.id), message.text, str(ctx.sender), str(ctx.topic_id), ctx.is_rpc))
        if message.text == "forward":  # from this worker's agent to the other worker's
            return await self.send_message(Ask("inner"), AgentId("far", "k"))
        return Ask("re:" + message.text)


def _run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def _until(cond, timeout=10.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not met"
        await asyncio.sleep(0.02)


def test_misuse_raises_what_autogen_core_raises():
    async def main():
        address = f"127.0.0.1:{free_port()}"
        host = MeshWorkerRuntimeHost(address=address)
        host.start()
        w = MeshWorkerRuntime(host_address=address)
        assert isinstance(w, AgentRuntime)
        await w.start()
        try:
            with pytest.raises((ValueError, RuntimeError)):
                await w.start()  # already running
            await Relay.register(w, "near", lambda: Relay())
            with pytest.raises(ValueError, match="near"):
                await Relay.register(w, "near", lambda: Relay())
            sub = TypeSubscription("topic-x", "near")
            await w.add_subscription(sub)
            with pytest.raises(ValueError):
                await w.add_subscription(sub)
            with pytest.raises((ValueError, LookupError)):
                await w.remove_subscription("no-such-subscription")
            await w.remove_subscription(sub.id)  # now it can go, once
            with pytest.raises(LookupError, match="unknown"):
                await w.get("unknown", "k", lazy=False)
            assert await w.get("near", "k9") == AgentId("near", "k9")
            token = CancellationToken()
            token.cancel()
            with pytest.raises(asyncio.CancelledError):
                await w.send_message(Ask("a"), AgentId("near", "k1"), cancellation_token=token)
            await w.publish_message(Ask("nobody listens"), TopicId("no-subscriber", "s"))  # not an error
            assert await w.send_message(Ask("a"), AgentId("near", "k1")) == Ask("re:a")  # it goes on
        finally:
            await w.stop()
            await host.stop()
        with pytest.raises(RuntimeError):
            await w.stop()  # stopped already

    _run(main())


def test_a_handler_sees_its_sender_and_topic_across_workers():
    SEEN.clear()

    async def main():
        address = f"127.0.0.1:{free_port()}"
        host = MeshWorkerRuntimeHost(address=address)
        host.start()
        w1, w2 = MeshWorkerRuntime(host_address=address), MeshWorkerRuntime(host_address=address)
        await w1.start()
        await w2.start()
        try:
            await Relay.register(w1, "near", lambda: Relay())
            await Relay.register(w2, "far", lambda: Relay())
            got = await w2.send_message(Ask("forward"), AgentId("near", "k1"), sender=AgentId("user", "u1"))
            assert got == Ask("re:inner")
            await w1.publish_message(Ask("all"), DefaultTopicId())
            await _until(lambda: sum(1 for s in SEEN if s[1] == "all") == 2)
        finally:
            await w1.stop()
            await w2.stop()
            await host.stop()

    _run(main())
    assert ("near/k1", "forward", "user/u1", "None", True) in SEEN
    assert ("far/k", "inner", "near/k1", "None", True) in SEEN  # the sender is the agent on the other worker
    published = sorted(s for s in SEEN if s[1] == "all")
    assert published == [("far/default", "all", "None", "default/default", False),
                         ("near/default", "all", "None", "default/default", False)]
