"""Acceptance tests (second pass) of API.md "AutoGen's runtime on the mesh" and issue 14's lists.

Written as an AutoGen user would for the gRPC runtime, with only the runtime imports changed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

pytest.importorskip("autogen_core")

from autogen_core import (  # noqa: E402
    AgentId,
    CancellationToken,
    DefaultTopicId,
    MessageContext,
    RoutedAgent,
    TopicId,
    TypeSubscription,
    default_subscription,
    message_handler,
    type_subscription,
)
from pydantic import BaseModel  # noqa: E402

from mesh.autogen import MeshWorkerRuntime, MeshWorkerRuntimeHost  # noqa: E402
from conftest import free_port

LOG: list = []
CREATED: list = []


@dataclass
class Note:
    text: str


@dataclass
class Ask:
    n: int


class Item(BaseModel):
    name: str
    qty: int


class Unregistered:  # neither a dataclass nor a pydantic model: AutoGen has no serializer for it
    def __init__(self, x: int) -> None:
        self.x = x


@default_subscription
class Hearer(RoutedAgent):
    def __init__(self, tag: str) -> None:
        super().__init__("hears")
        self.tag = tag
        CREATED.append((tag, self.id.key))

    @message_handler
    async def on_note(self, message: Note, ctx: MessageContext) -> None:
        LOG.append((self.tag, self.id.type, self.id.key, message.text))
        if message.text == "echo-from-hearer":
            await self.publish_message(Note("from " + self.tag), DefaultTopicId())

    @message_handler
    async def on_ask(self, message: Ask, ctx: MessageContext) -> int:
        if message.n < 0:
            raise ValueError(f"negative {message.n}")
        LOG.append((self.tag, "ask", self.id.key, message.n))
        return message.n * 2

    @message_handler
    async def on_item(self, message: Item, ctx: MessageContext) -> Item:
        return Item(name=message.name.upper(), qty=message.qty + 1)


@type_subscription(topic_type="news")
class Reporter(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("reports")

    @message_handler
    async def on_note(self, message: Note, ctx: MessageContext) -> None:
        LOG.append(("reporter", self.id.key, message.text))


class Waiter(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("waits")

    @message_handler
    async def on_ask(self, message: Ask, ctx: MessageContext) -> int:
        try:
            await asyncio.sleep(message.n)
        except asyncio.CancelledError:
            LOG.append(("waiter", "cancelled"))
            raise
        return message.n


async def _until(cond, timeout=10.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"condition not met; LOG={LOG}")
        await asyncio.sleep(0.02)


@pytest.fixture(autouse=True)
def _reset():
    LOG.clear()
    CREATED.clear()


def _run(scenario, workers=2, timeout=60):
    address = f"127.0.0.1:{free_port()}"

    async def main():
        host = MeshWorkerRuntimeHost(address=address)
        host.start()
        ws = [MeshWorkerRuntime(host_address=address) for _ in range(workers)]
        for w in ws:
            await w.start()
        try:
            await asyncio.wait_for(scenario(*ws), timeout)
        finally:
            for w in ws:
                await w.stop()
            await host.stop()

    asyncio.run(main())


def test_publish_reaches_each_subscription_once_not_the_sender():
    async def scenario(w1, w2):
        await Hearer.register(w1, "h1", lambda: Hearer("h1"))
        await Hearer.register(w2, "h2", lambda: Hearer("h2"))
        await Reporter.register(w2, "rep", lambda: Reporter())
        await w1.publish_message(Note("hello"), DefaultTopicId())
        await _until(lambda: {e[0] for e in LOG if e[-1] == "hello"} == {"h1", "h2"})
        await w1.publish_message(Note("scoop"), TopicId("news", "src7"))
        await _until(lambda: ("reporter", "src7", "scoop") in LOG)  # the topic source is the key
        await w2.add_subscription(TypeSubscription("alerts", "rep"))  # added at run time, on another worker
        await w1.publish_message(Note("alarm"), TopicId("alerts", "src9"))
        await _until(lambda: ("reporter", "src9", "alarm") in LOG)
        # an agent that publishes does not receive its own message
        await w1.send_message(Note("echo-from-hearer"), AgentId("h1", "default"))
        await _until(lambda: ("h2", "h2", "default", "from h1") in LOG)
        await asyncio.sleep(0.3)  # give a wrong extra delivery the time to show up
        assert ("h1", "h1", "default", "from h1") not in LOG
        assert sum(1 for e in LOG if e[-1] == "hello") == 2  # exactly once each
        assert sum(1 for e in LOG if e[-1] == "scoop") == 1

    _run(scenario)


def test_lazy_creation_one_agent_per_id_and_order_per_sender():
    async def scenario(w1, w2):
        await Hearer.register(w2, "h", lambda: Hearer("h"))
        assert CREATED == []  # lazily: nothing until a message needs it
        for i in range(20):
            await w1.send_message(Ask(i), AgentId("h", "k1"))
        for i in range(3):
            await w1.send_message(Ask(i), AgentId("h", "k2"))
        assert sorted(CREATED) == [("h", "k1"), ("h", "k2")]
        got = [e[3] for e in LOG if e[2] == "k1"]
        assert got == list(range(20))
        # publishes from one sender to one recipient arrive in order too
        LOG.clear()
        for i in range(20):
            await w1.publish_message(Note(str(i)), TopicId("default", "k1"))
        await _until(lambda: len(LOG) == 20)
        assert [e[3] for e in LOG] == [str(i) for i in range(20)]

    _run(scenario)


def test_handler_exception_reaches_send_message_caller():
    async def scenario(w1, w2):
        await Hearer.register(w2, "h", lambda: Hearer("h"))
        with pytest.raises(Exception) as ei:
            await w1.send_message(Ask(-3), AgentId("h", "x"))
        assert "negative -3" in str(ei.value)
        assert await w1.send_message(Ask(4), AgentId("h", "x")) == 8  # the agent keeps serving

    _run(scenario)


def test_pydantic_message_round_trip_and_unregistered_type_is_a_clear_error():
    async def scenario(w1, w2):
        await Hearer.register(w2, "h", lambda: Hearer("h"))
        out = await w1.send_message(Item(name="nut", qty=1), AgentId("h", "p"))
        assert isinstance(out, Item) and out == Item(name="NUT", qty=2)
        with pytest.raises(Exception) as ei:
            await asyncio.wait_for(w1.send_message(Unregistered(1), AgentId("h", "p")), 10)
        assert "Unregistered" in str(ei.value)
        with pytest.raises(Exception) as ei:
            await asyncio.wait_for(w1.publish_message(Unregistered(2), DefaultTopicId()), 10)
        assert "Unregistered" in str(ei.value)

    _run(scenario)


def test_one_type_on_several_workers_spreads_keys():
    async def scenario(w1, w2, w3):
        await Hearer.register(w2, "h", lambda: Hearer("on-w2"))
        await Hearer.register(w3, "h", lambda: Hearer("on-w3"))
        for i in range(16):
            await w1.send_message(Ask(i), AgentId("h", f"key{i}"))
        tags = {tag for tag, _ in CREATED}
        assert tags == {"on-w2", "on-w3"}, CREATED
        assert len(CREATED) == 16  # one agent per key

    _run(scenario, workers=3)


def test_cancellation_token_cancels_across_workers():
    async def scenario(w1, w2):
        await Waiter.register(w2, "waiter", lambda: Waiter())
        token = CancellationToken()
        call = asyncio.ensure_future(w1.send_message(Ask(30), AgentId("waiter", "k"), cancellation_token=token))
        await asyncio.sleep(0.5)
        token.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(call, 10)
        await _until(lambda: ("waiter", "cancelled") in LOG)

    _run(scenario)


def test_save_and_load_state_across_workers():
    class Counter(RoutedAgent):
        def __init__(self) -> None:
            super().__init__("counts")
            self.count = 0

        @message_handler
        async def on_ask(self, message: Ask, ctx: MessageContext) -> int:
            self.count += message.n
            return self.count

        async def save_state(self):
            return {"count": self.count}

        async def load_state(self, state):
            self.count = state["count"]

    async def scenario(w1, w2):
        await Counter.register(w2, "c", lambda: Counter())
        assert await w1.send_message(Ask(5), AgentId("c", "a")) == 5
        saved = await w1.agent_save_state(AgentId("c", "a"))
        assert saved == {"count": 5}
        await w1.send_message(Ask(5), AgentId("c", "a"))
        await w1.agent_load_state(AgentId("c", "a"), {"count": 100})
        assert await w1.send_message(Ask(1), AgentId("c", "a")) == 101
        state = await w2.save_state()
        await w2.load_state(state)
        assert await w1.send_message(Ask(0), AgentId("c", "a")) == 101

    _run(scenario)
