"""AutoGen's runtime and the durable machinery (issue 15 point 6): agents' states in the mesh's state
store, with its sealing and incremental checkpoints; an agent made on a worker starts from them."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

import pytest

pytest.importorskip("autogen_core")

from autogen_core import AgentId, MessageContext, RoutedAgent, message_handler  # noqa: E402

import mesh  # noqa: E402
from mesh._core import ckpt_log  # noqa: E402
from mesh._core.state_store import DirectoryStore, state_key  # noqa: E402
from mesh._core.stores import open_store  # noqa: E402
from mesh.autogen import MeshWorkerRuntime, MeshWorkerRuntimeHost  # noqa: E402
from mesh.autogen._durable import AgentStates, object_id  # noqa: E402


@dataclass
class Add:
    n: int


@dataclass
class Total:
    total: int
    where: str


class Tally(RoutedAgent):
    def __init__(self, where: str) -> None:
        super().__init__("adds what it gets")
        self.where = where
        self.items: list[int] = []

    @message_handler
    async def on_add(self, message: Add, ctx: MessageContext) -> Total:
        if message.n < 0:
            raise ValueError("negative")
        self.items.append(message.n)
        return Total(total=sum(self.items), where=self.where)

    async def save_state(self):
        return {"items": list(self.items)}

    async def load_state(self, state) -> None:
        self.items = [int(i) for i in state["items"]]


def run(coro, timeout: float = 45.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(cond, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)


class Mesh:
    def __init__(self) -> None:
        self.host = MeshWorkerRuntimeHost("127.0.0.1:0", advertise=False)
        self.workers: list[MeshWorkerRuntime] = []

    async def worker(self, **kw) -> MeshWorkerRuntime:
        w = MeshWorkerRuntime(host_address=self.host.address, heartbeat_timeout=1.0, **kw)
        await w.start()
        self.workers.append(w)
        return w

    async def __aenter__(self) -> Mesh:
        self.host.start()
        return self

    async def __aexit__(self, *exc) -> None:
        for w in self.workers:
            if w._running:
                await w.stop()
        await self.host.stop()


def test_with_checkpoint_an_agent_goes_on_with_its_state_on_the_worker_that_takes_its_key(tmp_path):
    store = str(tmp_path / "state")

    async def main() -> None:
        async with Mesh() as m:
            a = await m.worker(state_store=store, checkpoint=True)
            b = await m.worker(state_store=store, checkpoint=True)
            await Tally.register(a, "tally", lambda: Tally("a"))
            await Tally.register(b, "tally", lambda: Tally("b"))
            await until(lambda: len(a._holders("tally")) == 2 and len(b._holders("tally")) == 2)
            key = next(k for k in (f"k{i}" for i in range(50)) if a._routes.owner(AgentId("tally", k)) == a.worker_id)
            agent = AgentId("tally", key)
            for n in (1, 2, 3):
                assert (await b.send_message(Add(n), agent)).where == "a"
            with pytest.raises(Exception, match="negative"):
                await b.send_message(Add(-1), agent)  # raised: nothing new stored
            version, data = ckpt_log.read(open_store(store), object_id(agent))
            assert b'"items":[1,2,3]' in data and version == 2
            await a.stop()  # its keys move to b, which makes the agent again: from the store
            await until(lambda: b._holders("tally") == [b.worker_id])
            reply = await b.send_message(Add(4), agent)
            assert (reply.total, reply.where) == (10, "b")
            assert await b.agent_save_state(agent) == {"items": [1, 2, 3, 4]}

    run(main())


def test_save_and_load_state_keep_agents_states_in_the_store_for_a_later_run(tmp_path):
    store = str(tmp_path / "state")

    async def first() -> None:
        async with Mesh() as m:
            w = await m.worker(state_store=store)  # no checkpoint: only explicit saves are stored
            await Tally.register(w, "tally", lambda: Tally("first"))
            await w.send_message(Add(5), AgentId("tally", "x"))
            await w.send_message(Add(6), AgentId("tally", "y"))
            assert ckpt_log.read(open_store(store), object_id(AgentId("tally", "x"))) is None
            saved = await w.save_state()
            assert saved == {"tally/x": {"items": [5]}, "tally/y": {"items": [6]}}
            await w.agent_load_state(AgentId("tally", "y"), {"items": [60, 0]})
            await w.send_message(Add(7), AgentId("tally", "x"))  # not saved: no checkpoint

    async def second() -> None:
        async with Mesh() as m:
            w = await m.worker(state_store=store)
            await Tally.register(w, "tally", lambda: Tally("second"))
            assert (await w.send_message(Add(1), AgentId("tally", "x"))).total == 6
            assert (await w.send_message(Add(1), AgentId("tally", "y"))).total == 61
            assert (await w.send_message(Add(1), AgentId("tally", "z"))).total == 1  # nothing stored: fresh

    run(first())
    run(second())


def test_states_are_sealed_with_the_secret_and_a_bad_one_fails_naming_the_agent_and_the_store(tmp_path):
    root = str(tmp_path / "state")
    agent = AgentId("tally", "k")
    mine = AgentStates(root, checkpoint=False)
    mine._store = DirectoryStore(root, state_key(b"ours"))
    for i in range(5):
        mine.write(agent, {"items": list(range(i))})
    assert mine.read(agent) == {"items": [0, 1, 2, 3]}
    theirs = AgentStates(root, checkpoint=False)
    theirs._store = DirectoryStore(root, state_key(b"theirs"))
    with pytest.raises(mesh.StateStoreError) as info:
        theirs.read(agent)
    assert "tally/k" in str(info.value) and root in str(info.value) and "secret" in str(info.value)
    with open(os.path.join(root, object_id(agent), "ckpt"), "r+b") as fh:
        fh.truncate(20)
    with pytest.raises(mesh.StateStoreError, match=f"tally/k.*{root}.*corrupted"):
        mine.read(agent)
    with pytest.raises(mesh.CheckpointError, match="tally/k.*not JSON"):
        mine.write(agent, {"items": object()})


def test_a_corrupted_stored_state_fails_the_message_clearly(tmp_path):
    store = str(tmp_path / "state")

    async def main() -> None:
        async with Mesh() as m:
            w = await m.worker(state_store=store, checkpoint=True)
            await Tally.register(w, "tally", lambda: Tally("w"))
            agent = AgentId("tally", "bad")
            states = AgentStates(store, checkpoint=False)
            states.write(agent, {"items": [1]})
            path = os.path.join(store, object_id(agent), "ckpt")
            with open(path, "r+b") as fh:
                fh.seek(40)
                fh.write(b"\xff\xfe")
            with pytest.raises(mesh.StateStoreError, match="tally/bad"):
                await w.send_message(Add(1), agent)
            assert (await w.send_message(Add(2), AgentId("tally", "good"))).total == 2

    run(main())
