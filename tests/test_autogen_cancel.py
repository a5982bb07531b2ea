"""``CancellationToken`` cancels across processes (issue 14, point 5).

The handler runs in another process (a worker of its own); the caller cancels its token, or its own
task: a ``cancel`` event follows the request over the runtime's worker-to-worker link, the remote
handler's ``ctx.cancellation_token`` is cancelled and its task with it, and the caller gets
``asyncio.CancelledError``. The remote worker keeps serving.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass

import pytest

pytest.importorskip("autogen_core")

from autogen_core import AgentId, CancellationToken, try_get_known_serializers_for_type  # noqa: E402
from conftest import ROOT  # noqa: E402
from vlan import LineReader  # noqa: E402

from mesh.autogen import MeshWorkerRuntime, MeshWorkerRuntimeHost  # noqa: E402

REMOTE = textwrap.dedent('''
    import asyncio, sys
    from dataclasses import dataclass
    from autogen_core import MessageContext, RoutedAgent, message_handler
    from mesh.autogen import MeshWorkerRuntime

    @dataclass
    class Slow:
        secs: float
        tag: str

    @dataclass
    class Done:
        text: str

    class Sleeper(RoutedAgent):
        def __init__(self):
            super().__init__("sleeps")

        @message_handler
        async def on_slow(self, message: Slow, ctx: MessageContext) -> Done:
            print(f"started {message.tag}", flush=True)
            try:
                await asyncio.sleep(message.secs)
            except asyncio.CancelledError:
                print(f"cancelled {message.tag} token={ctx.cancellation_token.is_cancelled()}", flush=True)
                raise
            return Done(f"slept {message.tag}")

    async def main():
        w = MeshWorkerRuntime(host_address=sys.argv[1])
        await w.start()
        await Sleeper.register(w, "sleeper", Sleeper)
        print("registered", flush=True)
        await w.stop_when_signal()

    asyncio.run(main())
''')


@dataclass
class Slow:  # the same names as the remote's: AutoGen's serializers go by type name
    secs: float
    tag: str


@dataclass
class Done:
    text: str


@pytest.fixture
def remote():
    host = MeshWorkerRuntimeHost("127.0.0.1:0", advertise=False)
    host.start()
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", REMOTE, host.address], stdout=subprocess.PIPE, text=True, env=env)
    out = LineReader(proc.stdout)
    try:
        out.wait_for(lambda ln: ln == "registered", timeout=30)
        yield host, out
    finally:
        proc.terminate()
        try:
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            asyncio.run(host.stop())


def test_cancelling_the_token_cancels_the_handler_in_another_process(remote):
    host, out = remote

    async def line(prefix: str) -> str:
        return await asyncio.to_thread(out.wait_for, lambda ln: ln if ln.startswith(prefix) else None, 30)

    async def main() -> None:
        w = MeshWorkerRuntime(host_address=host.address)
        await w.start()
        try:
            for t in (Slow, Done):
                w.add_message_serializer(try_get_known_serializers_for_type(t))
            target = AgentId("sleeper", "k")

            # 1. cancelled while the handler runs over there
            token = CancellationToken()
            call = asyncio.ensure_future(w.send_message(Slow(60, "a"), target, cancellation_token=token))
            assert await line("started ") == "started a"
            token.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert await line("cancelled ") == "cancelled a token=True"

            # 2. cancelled from another thread (a token may be cancelled anywhere)
            token = CancellationToken()
            call = asyncio.ensure_future(w.send_message(Slow(60, "b"), target, cancellation_token=token))
            assert await line("started ") == "started b"
            threading.Thread(target=token.cancel).start()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert await line("cancelled ") == "cancelled b token=True"

            # 3. the caller's own task cancelled (e.g. asyncio.wait_for's timeout): the handler stops too
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(w.send_message(Slow(60, "c"), target), 1.0)
            assert await line("cancelled ") == "cancelled c token=True"

            # 4. a token cancelled before the call: CancelledError, and nothing keeps running there
            token = CancellationToken()
            token.cancel()
            with pytest.raises(asyncio.CancelledError):
                await w.send_message(Slow(60, "d"), target, cancellation_token=token)

            # the remote worker keeps serving, and no handler of d is left running
            assert await w.send_message(Slow(0, "e"), target) == Done("slept e")
            assert not [ln for ln in out.drain() if ln == "started d"] or "cancelled d token=True" in out.lines
        finally:
            await w.stop()

    asyncio.run(asyncio.wait_for(main(), 60))
