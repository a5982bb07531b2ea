"""More of issue 14 checked line by line: an oversized event from a peer is refused and the worker
keeps serving; a worker that joins while the host is frozen is the one thing that waits."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

pytest.importorskip("autogen_core")

from autogen_core import AgentId, MessageContext, RoutedAgent, TopicId, TypeSubscription, message_handler  # noqa: E402

import mesh  # noqa: E402
from mesh.autogen import MeshWorkerRuntime, MeshWorkerRuntimeHost  # noqa: E402
from tests.conftest import freeze


@dataclass
class Blob:
    data: str


@dataclass
class Size:
    n: int


GOT: list[int] = []


class Sink(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("takes blobs")

    @message_handler
    async def on_blob(self, message: Blob, ctx: MessageContext) -> Size:
        GOT.append(len(message.data))
        return Size(len(message.data))


async def until(cond, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_an_oversized_event_is_refused_and_the_worker_keeps_serving():
    async def main() -> None:
        GOT.clear()
        host = MeshWorkerRuntimeHost("127.0.0.1:0", advertise=False)
        host.start()
        small = MeshWorkerRuntime(host_address=host.address, max_message_size=256 * 1024)
        sender = MeshWorkerRuntime(host_address=host.address)
        try:
            await small.start()
            await sender.start()
            await Sink.register(small, "sink", Sink, skip_class_subscriptions=True)
            await small.add_subscription(TypeSubscription("blobs", "sink"))
            await Sink.register(sender, "local", Sink, skip_class_subscriptions=True)  # Blob's serializer here
            big = Blob("x" * (1024 * 1024))
            with pytest.raises(mesh.MeshError):
                await asyncio.wait_for(sender.send_message(big, AgentId("sink", "k")), 20)
            await sender.publish_message(big, TopicId("blobs", "k"))  # refused over there: logged, dropped
            await sender.publish_message(Blob("small"), TopicId("blobs", "k"))
            await until(lambda: GOT == [5])
            assert await sender.send_message(Blob("ok"), AgentId("sink", "k")) == Size(2)
            assert GOT == [5, 2]
        finally:
            for w in (sender, small):
                if w._running:
                    await w.stop()
            await host.stop()

    asyncio.run(asyncio.wait_for(main(), 50))


def test_a_worker_joining_while_the_host_is_frozen_is_the_one_thing_that_waits():
    import os
    import signal

    from test_autogen import Procs, _host

    procs = Procs()
    try:
        host, address = _host(procs)

        async def main() -> None:
            GOT.clear()
            w1, w2 = MeshWorkerRuntime(host_address=address), MeshWorkerRuntime(host_address=address)
            late = MeshWorkerRuntime(host_address=address, join_timeout=40)
            try:
                await w1.start()
                await w2.start()
                await Sink.register(w1, "sink", Sink)
                await Sink.register(w2, "local", Sink)
                freeze(host.pid)
                try:
                    joining = asyncio.ensure_future(late.start())
                    done, _ = await asyncio.wait({joining}, timeout=1.5)
                    assert not done, "a worker joined a frozen host"
                    # meanwhile the workers that know each other go on
                    assert await w2.send_message(Blob("abc"), AgentId("sink", "k")) == Size(3)
                    assert not joining.done()
                finally:
                    os.kill(host.pid, signal.SIGCONT)
                await asyncio.wait_for(joining, 30)
                await Sink.register(late, "late", Sink)
                assert await late.send_message(Blob("late"), AgentId("sink", "k")) == Size(4)
            finally:
                for w in (late, w2, w1):
                    if w._running:
                        await w.stop()

        asyncio.run(asyncio.wait_for(main(), 50))
    finally:
        procs.close()


def test_reply_addresses_round_trip_and_any_peer_value_decodes_or_raises_value_error():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from mesh.autogen import _wire

    proxy = mesh.RpcObject("tcp://127.0.0.1:1", "abc", "Endpoint", {"deliver": "async"}, None, "run1")
    ref = _wire.endpoint_ref(proxy)
    assert _wire.endpoint_from(ref) == proxy and _wire.endpoint_from(proxy) is proxy
    import msgpack

    assert msgpack.unpackb(msgpack.packb(ref)) == ref  # plain data: no pickle on the data path

    leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=10) | st.binary(max_size=10)
    value = st.recursive(leaf, lambda c: st.lists(c, max_size=7) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                         max_leaves=14)

    @settings(max_examples=300, deadline=None)
    @given(value)
    def check(v):
        try:
            _wire.endpoint_from(v)
        except ValueError:
            pass

    check()
