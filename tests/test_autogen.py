"""AutoGen's distributed runtime on the mesh (issue 14): ``mesh.autogen``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
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
    TypePrefixSubscription,
    TypeSubscription,
    default_subscription,
    message_handler,
    type_subscription,
)
from conftest import ROOT, TESTS, freeze, free_port  # noqa: E402
from vlan import LineReader  # noqa: E402

import mesh  # noqa: E402
from mesh.autogen import (  # noqa: E402
    MeshWorkerRuntime,
    MeshWorkerRuntimeHost,
    MessageSerializationError,
    UnknownAgentType,
    WorkerUnavailable,
)

SEEDS = os.path.join(TESTS, "seeds")


# ------------------------------------------------------------------ agents used by the tests
@dataclass
class Ping:
    text: str
    n: int = 0


@dataclass
class Reply:
    text: str


@dataclass
class Boom:
    why: str


class NotSerializable:  # no serializer: neither a dataclass nor a pydantic model
    pass


LOG: list[tuple[str, str, str, int, str]] = []  # (worker, agent type, key, n, sender) of every handled Ping


class Recorder(RoutedAgent):
    def __init__(self, worker: str) -> None:
        super().__init__("records what it gets")
        self.worker = worker
        self.count = 0

    @message_handler
    async def on_ping(self, message: Ping, ctx: MessageContext) -> None:
        self.count += 1
        LOG.append((self.worker, self.id.type, self.id.key, message.n, str(ctx.sender)))

    @message_handler
    async def on_boom(self, message: Boom, ctx: MessageContext) -> Reply:
        if message.why == "value":
            raise ValueError(f"bad value from {self.id}")
        if message.why == "where":
            return Reply(text=f"{self.worker}/{self.id.key}")
        if message.why == "slow":
            await asyncio.sleep(30)
        return Reply(text=f"{self.id.key} saw {self.count}")

    async def save_state(self):
        return {"count": self.count}

    async def load_state(self, state) -> None:
        self.count = int(state["count"])


@default_subscription
class Chatty(Recorder):
    """Subscribed to the default topic: publishes one Ping per Ping from someone else (once)."""

    @message_handler
    async def on_ping(self, message: Ping, ctx: MessageContext) -> None:
        await super().on_ping(message, ctx)
        if message.n == 0:
            await self.publish_message(Ping(text=self.id.type, n=1), DefaultTopicId())


@type_subscription(topic_type="room")
class Roomie(Recorder):
    pass


def run(coro, timeout: float = 45.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s; log: {LOG[-20:]}")
        await asyncio.sleep(0.01)


class Mesh:
    """A host and workers in this process, stopped at the end whatever happens."""

    def __init__(self, n: int, host: bool = True, host_address: str | None = None, **kw) -> None:
        self.n, self.kw = n, kw
        self.host = MeshWorkerRuntimeHost("127.0.0.1:0", advertise=False) if host else None
        self.host_address = host_address
        self.workers: list[MeshWorkerRuntime] = []

    async def __aenter__(self) -> Mesh:
        LOG.clear()
        if self.host is not None:
            self.host.start()
            self.host_address = self.host.address
        for _ in range(self.n):
            await self.add()
        return self

    async def add(self) -> MeshWorkerRuntime:
        w = MeshWorkerRuntime(host_address=self.host_address, **self.kw)
        await w.start()
        self.workers.append(w)
        return w

    async def __aexit__(self, *exc) -> None:
        for w in self.workers:
            if w._running:
                await w.stop()
        if self.host is not None and self.host._server is not None:
            await self.host.stop()


# ------------------------------------------------------------------ point 1 and 4: the runtime's semantics
def test_worker_is_an_autogen_agent_runtime():
    from autogen_core import AgentRuntime

    for name in ("register_factory", "register_agent_instance", "publish_message", "send_message",
                 "add_subscription", "remove_subscription", "get", "try_get_underlying_agent_instance",
                 "agent_metadata", "save_state", "load_state", "agent_save_state", "agent_load_state",
                 "add_message_serializer", "start", "stop", "stop_when_signal"):
        assert callable(getattr(MeshWorkerRuntime, name)), name
    assert isinstance(MeshWorkerRuntime(host_address="127.0.0.1:1"), AgentRuntime)
    for name in ("start", "stop", "stop_when_signal"):
        assert callable(getattr(MeshWorkerRuntimeHost, name)), name


def test_publish_reaches_each_subscriber_once_not_the_sender_and_creates_lazily():
    async def main() -> None:
        async with Mesh(3) as m:
            w1, w2, w3 = m.workers
            await Chatty.register(w1, "a", lambda: Chatty("w1"))
            await Chatty.register(w2, "b", lambda: Chatty("w2"))
            await Chatty.register(w3, "c", lambda: Chatty("w3"))
            assert not w1._agents and not w2._agents  # lazy: nothing made before a message needs it
            await w3.publish_message(Ping(text="go"), DefaultTopicId())
            # round 0: a, b, c each get "go" once; round 1: each publishes n=1, seen by the two others
            await until(lambda: len(LOG) >= 9)
            await asyncio.sleep(0.2)  # (a duplicate, if any, would come now; correctness does not rely on it)
            got = sorted((t, n) for _, t, _, n, _ in LOG)
            assert got == [("a", 0), ("a", 1), ("a", 1), ("b", 0), ("b", 1), ("b", 1),
                           ("c", 0), ("c", 1), ("c", 1)]
            for _, t, _, n, sender in LOG:
                if n == 1:
                    assert not sender.startswith(f"{t}/"), "an agent got its own publish"
            assert [list(w._agents) for w in m.workers] == [[AgentId("a", "default")], [AgentId("b", "default")],
                                                           [AgentId("c", "default")]]

    run(main())


def test_type_subscription_maps_topic_source_to_key_one_agent_per_id():
    async def main() -> None:
        async with Mesh(2) as m:
            w1, w2 = m.workers
            await Roomie.register(w1, "roomie", lambda: Roomie("w1"))
            for source in ("k1", "k2", "k1", "k3", "k2", "k1"):
                await w2.publish_message(Ping(text="x"), TopicId("room", source))
            await until(lambda: len(LOG) == 6)
            keys = sorted(k for _, _, k, _, _ in LOG)
            assert keys == ["k1", "k1", "k1", "k2", "k2", "k3"]
            assert sorted(a.key for a in w1._agents) == ["k1", "k2", "k3"]
            agent = await w1.try_get_underlying_agent_instance(AgentId("roomie", "k1"), Roomie)
            assert agent.count == 3

    run(main())


def test_prefix_subscription_and_remove_subscription_travel_to_other_workers():
    async def main() -> None:
        async with Mesh(2) as m:
            w1, w2 = m.workers
            await Recorder.register(w1, "rec", lambda: Recorder("w1"), skip_class_subscriptions=True)
            sub = TypePrefixSubscription("news.", "rec")
            await w1.add_subscription(sub)
            await w2.publish_message(Ping(text="x", n=1), TopicId("news.sport", "s"))
            await until(lambda: len(LOG) == 1)
            assert LOG[0][1:3] == ("rec", "s")
            await w1.remove_subscription(sub.id)
            with pytest.raises(ValueError):
                await w1.remove_subscription(sub.id)
            await until(lambda: not any(s["topic"] == "news." for w in w2._table["workers"].values()
                                        for s in [__import__("mesh.autogen._wire", fromlist=["x"]).encode_sub(x)
                                                  for x in w["subs"]]))
            await w2.publish_message(Ping(text="x", n=2), TopicId("news.sport", "s"))
            await w2.send_message(Boom("ok"), AgentId("rec", "s"))  # a round trip: the publish came before
            assert len(LOG) == 1

    run(main())


def test_send_message_round_trip_and_handler_exception_reaches_the_caller():
    async def main() -> None:
        async with Mesh(2) as m:
            w1, w2 = m.workers
            await Recorder.register(w1, "rec", lambda: Recorder("w1"))
            reply = await w2.send_message(Boom("ok"), AgentId("rec", "k"))
            assert reply == Reply(text="k saw 0")
            with pytest.raises(ValueError, match="bad value from rec/k") as info:
                await w2.send_message(Boom("value"), AgentId("rec", "k"))
            assert isinstance(info.value, mesh.RemoteError) and info.value.remote_type == "ValueError"
            with pytest.raises(UnknownAgentType, match="nobody"):
                await w2.send_message(Boom("ok"), AgentId("nobody", "k"))
            # the same worker: no mesh hop, same semantics
            assert await w1.send_message(Boom("ok"), AgentId("rec", "k")) == Reply(text="k saw 0")

    run(main())


def test_message_without_serializer_is_a_clear_error_naming_the_type():
    async def main() -> None:
        async with Mesh(2) as m:
            w1, w2 = m.workers
            await Chatty.register(w1, "a", lambda: Chatty("w1"))
            with pytest.raises(MessageSerializationError, match="NotSerializable"):
                await w2.publish_message(NotSerializable(), DefaultTopicId())
            with pytest.raises(ValueError, match="NotSerializable"):
                await w2.send_message(NotSerializable(), AgentId("a", "default"))
            await Chatty.register(w2, "b", lambda: Chatty("w2"))  # now w2 knows Ping's serializer
            await w2.publish_message(Ping(text="still fine", n=1), DefaultTopicId())
            await until(lambda: len(LOG) == 2)

    run(main())


def test_messages_from_one_sender_to_one_recipient_arrive_in_order():
    async def main() -> None:
        async with Mesh(2) as m:
            w1, w2 = m.workers
            await Roomie.register(w1, "roomie", lambda: Roomie("w1"))
            await Recorder.register(w2, "src", lambda: Recorder("w2"))
            for i in range(300):
                await w2.publish_message(Ping(text="o", n=i), TopicId("room", "one"), sender=AgentId("src", "x"))
            await until(lambda: len(LOG) == 300, timeout=20)
            assert [e[3] for e in LOG] == list(range(300))

    run(main())


def test_malformed_delivery_is_dropped_and_the_worker_keeps_serving():
    async def main() -> None:
        async with Mesh(2) as m:
            w1, w2 = m.workers
            await Recorder.register(w1, "rec", lambda: Recorder("w1"))
            ep = w1._endpoint
            for junk in ("x", [1, 2], [{"k": "pub"}], [{"k": "nope"}], [{"k": "rpc", "rid": 1}]):
                await asyncio.to_thread(ep.deliver(junk).result, 10)
            assert await w2.send_message(Boom("ok"), AgentId("rec", "k")) == Reply(text="k saw 0")

    run(main())


# ------------------------------------------------------------------ point 2: the seed's program
def _five_each(lines: list[str], names=("worker1", "worker2")) -> bool:
    return all(sum(1 for ln in lines if ln.startswith(f"{n}: Hello x ")) == 5 for n in names)


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_seed_program_runs_in_one_process():
    env = _env()
    env["MESH_HELLO_PORT"] = str(free_port())
    env["MESH_HELLO_WAIT"] = "3"
    proc = subprocess.run([sys.executable, os.path.join(SEEDS, "autogen_hello.py")], env=env, capture_output=True,
                          text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    for name in ("worker1", "worker2"):
        assert [ln for ln in lines if ln.startswith(name)] == [f"{name}: Hello x {i}" for i in range(1, 6)], lines
    assert len(lines) == 10, lines


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, LineReader]:
        proc = subprocess.Popen([sys.executable, os.path.join(SEEDS, "autogen_hello_distributed.py"), *args],
                                stdout=subprocess.PIPE, stderr=None, text=True, env=env or _env())
        self.procs.append(proc)
        return proc, LineReader(proc.stdout)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                    p.terminate()
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


@pytest.fixture
def procs():
    p = Procs()
    yield p
    p.close()


def _host(procs: Procs) -> tuple[subprocess.Popen, str]:
    proc, out = procs.start("host", "127.0.0.1:0")
    line = out.wait_for(lambda ln: ln if ln.startswith("host ready ") else None, timeout=30)
    return proc, line.split()[-1]


def test_seed_program_with_host_and_each_worker_in_its_own_process(procs):
    _, address = _host(procs)
    _, out1 = procs.start("worker", "worker1", address)
    out1.wait_for(lambda ln: ln == "registered worker1", timeout=30)
    p2, out2 = procs.start("worker", "worker2", address, "--publish")
    lines1 = [out1.wait_for(lambda ln: ln if ln.startswith("worker1: ") else None, timeout=30) for _ in range(5)]
    lines2 = [out2.wait_for(lambda ln: ln if ln.startswith("worker2: ") else None, timeout=30) for _ in range(5)]
    assert lines1 == [f"worker1: Hello x {i}" for i in range(1, 6)]
    assert lines2 == [f"worker2: Hello x {i}" for i in range(1, 6)]
    for p in procs.procs:  # stop_when_signal: SIGTERM stops each cleanly
        p.terminate()
    assert all(p.wait(20) == 0 for p in procs.procs)


# ------------------------------------------------------------------ point 3: no host on the data path
def test_frozen_host_does_not_stop_publishes_or_send_message(procs):
    host, address = _host(procs)

    async def main() -> None:
        async with Mesh(2, host=False, host_address=address) as m:
            w1, w2 = m.workers
            await Chatty.register(w1, "a", lambda: Chatty("w1"))
            await Chatty.register(w2, "b", lambda: Chatty("w2"))
            await w2.publish_message(Ping(text="round 1"), DefaultTopicId())
            await until(lambda: len(LOG) == 4)  # a and b get round 1, then each other's n=1
            freeze(host.pid)
            try:
                LOG.clear()
                await w1.publish_message(Ping(text="round 2"), DefaultTopicId())
                await until(lambda: len(LOG) == 4)
                assert await w1.send_message(Boom("ok"), AgentId("b", "default")) == Reply(text="default saw 4")
                assert await w2.send_message(Boom("ok"), AgentId("a", "default")) == Reply(text="default saw 4")
            finally:
                os.kill(host.pid, signal.SIGCONT)

    run(main(), timeout=50)


def test_join_by_discovery(monkeypatch):
    monkeypatch.setenv("MESH_DISCOVERY", "1")
    from mesh._core import settings as _settings

    _settings.reset()

    async def main() -> None:
        host = MeshWorkerRuntimeHost("127.0.0.1:0", advertise=True)
        host.start()
        try:
            async with Mesh(2, host=False, host_address=None) as m:
                w1, w2 = m.workers
                await Recorder.register(w1, "rec", lambda: Recorder("w1"))
                assert await w2.send_message(Boom("ok"), AgentId("rec", "k")) == Reply(text="k saw 0")
        finally:
            await host.stop()

    run(main())


# ------------------------------------------------------------------ point 5: beyond AutoGen
def test_type_on_several_workers_spreads_keys_and_moves_them_off_a_worker_that_leaves():
    async def main() -> None:
        async with Mesh(3) as m:
            w1, w2, w3 = m.workers
            await Recorder.register(w1, "rec", lambda: Recorder("w1"))
            await Recorder.register(w2, "rec", lambda: Recorder("w2"))
            status = m.host.status()
            assert sorted(r["types"] for r in status) == [[], ["rec"], ["rec"]]
            keys = [f"k{i}" for i in range(40)]
            where = {k: (await w3.send_message(Boom("where"), AgentId("rec", k))).text.split("/")[0] for k in keys}
            assert set(where.values()) == {"w1", "w2"}, where  # spread over both
            again = {k: (await w1.send_message(Boom("where"), AgentId("rec", k))).text.split("/")[0] for k in keys}
            assert again == where  # every worker computes the same owner
            await w2.stop()
            await until(lambda: len(w3._holders("rec")) == 1)
            after = {k: (await w3.send_message(Boom("where"), AgentId("rec", k))).text.split("/")[0] for k in keys}
            assert set(after.values()) == {"w1"}
            # a publish to a type subscription reaches one agent per key, on its owner
            await w1.add_subscription(TypeSubscription("t", "rec"))
            await w3.publish_message(Ping(text="p"), TopicId("t", "k7"))
            await until(lambda: any(e[2] == "k7" for e in LOG))

    run(main())


def test_send_message_to_a_dead_worker_raises_within_the_heartbeat_timeout(procs):
    _, address = _host(procs)
    victim, out = procs.start("worker", "worker1", address)
    out.wait_for(lambda ln: ln == "registered worker1", timeout=30)

    async def main() -> None:
        async with Mesh(1, host=False, host_address=address, heartbeat_timeout=1.0) as m:
            (w,) = m.workers
            await Recorder.register(w, "local", lambda: Recorder("w"))  # registers Ping's serializer here
            await until(lambda: w._holders("worker1"), timeout=10)
            freeze(victim.pid)  # frozen: no answer will ever come
            t0 = time.monotonic()
            with pytest.raises(mesh.ServerUnavailable) as info:
                await w.send_message(Ping(text="?"), AgentId("worker1", "default"))
            assert isinstance(info.value, WorkerUnavailable)
            assert time.monotonic() - t0 < 10
            os.kill(victim.pid, signal.SIGCONT)

    run(main(), timeout=50)


def test_state_saved_and_loaded_across_the_mesh():
    async def main() -> None:
        async with Mesh(3) as m:
            w1, w2, w3 = m.workers
            await Roomie.register(w1, "roomie", lambda: Roomie("w1"))
            await Roomie.register(w2, "roomie", lambda: Roomie("w2"))
            for key in ("a", "b", "c", "d", "e", "f"):
                for _ in range(ord(key) - ord("a") + 1):
                    await w3.publish_message(Ping(text="x"), TopicId("room", key))
            await until(lambda: len(LOG) == 21)
            state = await w3.save_state()
            assert state == {f"roomie/{k}": {"count": ord(k) - ord("a") + 1} for k in "abcdef"}
            assert await w3.agent_save_state(AgentId("roomie", "c")) == {"count": 3}
            await w3.agent_load_state(AgentId("roomie", "c"), {"count": 30})
            assert await w3.send_message(Boom("ok"), AgentId("roomie", "c")) == Reply(text="c saw 30")
            await w3.load_state({k: {"count": 0} for k in state})
            assert await w3.save_state() == {k: {"count": 0} for k in state}
            meta = await w3.agent_metadata(AgentId("roomie", "z"))
            assert meta["type"] == "roomie" and meta["key"] == "z"

    run(main())


def test_cancellation_token_cancels_the_remote_handler():
    async def main() -> None:
        async with Mesh(2) as m:
            w1, w2 = m.workers
            await Recorder.register(w1, "rec", lambda: Recorder("w1"))
            token = CancellationToken()
            call = asyncio.ensure_future(w2.send_message(Boom("slow"), AgentId("rec", "k"), cancellation_token=token))
            await until(lambda: any(t for t in w1._tasks), timeout=10)
            token.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            await until(lambda: not w1._tasks, timeout=10)  # the handler on w1 was cancelled too

    run(main())


def test_secret_is_demanded(monkeypatch):
    monkeypatch.setenv("MESH_SECRET", "s3cret-for-autogen")
    from mesh._core import settings as _settings

    _settings.reset()

    async def main() -> None:
        async with Mesh(2) as m:
            w1, w2 = m.workers
            await Recorder.register(w1, "rec", lambda: Recorder("w1"))
            assert await w2.send_message(Boom("ok"), AgentId("rec", "k")) == Reply(text="k saw 0")
            env = _env()
            env.pop("MESH_SECRET", None)
            code = ("import asyncio, sys; from mesh.autogen import MeshWorkerRuntime as W\n"
                    f"w = W(host_address={m.host_address!r}, join_timeout=3)\n"
                    "try:\n asyncio.run(w.start())\nexcept Exception as e:\n print(type(e).__name__)\n")
            out = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code], env=env,
                                          capture_output=True, text=True, timeout=40)
            assert out.stdout.strip() == "AuthenticationError", out.stdout + out.stderr

    run(main())
