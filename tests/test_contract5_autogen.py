"""Acceptance tests of API.md, fifth pass: ``mesh.autogen``'s worker answers misuse as autogen_core's
runtimes do (the same exception classes), and a handler sees who sent what, across workers.

"the worker implements autogen_core's AgentRuntime": a program that catches ``ValueError`` for a
type registered twice, or ``LookupError`` for an unknown agent, must go on doing so."""

from __future__ import annotations

import asyncio
import contextlib

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
from test_contract_autogen import Ping as Ask, _wait  # (a dataclass message)

SEEN: list = []


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


@contextlib.asynccontextmanager
async def _workers(n):
    """A host and ``n`` started workers joined to it, all stopped at the end."""
    address = f"127.0.0.1:{free_port()}"
    host = MeshWorkerRuntimeHost(address=address)
    host.start()
    workers = [MeshWorkerRuntime(host_address=address) for _ in range(n)]
    try:
        for w in workers:
            await w.start()
        yield workers
    finally:
        for w in workers:
            with contextlib.suppress(RuntimeError):  # (one a test stopped already)
                await w.stop()
        await host.stop()


def test_misuse_raises_what_autogen_core_raises():
    async def main():
        async with _workers(1) as (w,):
            assert isinstance(w, AgentRuntime)
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
            await w.stop()
            with pytest.raises(RuntimeError):
                await w.stop()  # stopped already

    _run(main())


def test_a_handler_sees_its_sender_and_topic_across_workers():
    SEEN.clear()

    async def main():
        async with _workers(2) as (w1, w2):
            await Relay.register(w1, "near", lambda: Relay())
            await Relay.register(w2, "far", lambda: Relay())
            got = await w2.send_message(Ask("forward"), AgentId("near", "k1"), sender=AgentId("user", "u1"))
            assert got == Ask("re:inner")
            await w1.publish_message(Ask("all"), DefaultTopicId())
            await _wait(lambda: sum(1 for s in SEEN if s[1] == "all") == 2)

    _run(main())
    assert ("near/k1", "forward", "user/u1", "None", True) in SEEN
    assert ("far/k", "inner", "near/k1", "None", True) in SEEN  # the sender is the agent on the other worker
    published = sorted(s for s in SEEN if s[1] == "all")
    assert published == [("far/default", "all", "None", "default/default", False),
                         ("near/default", "all", "None", "default/default", False)]
