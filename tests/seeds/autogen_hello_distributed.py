"""The seed's "Hello x 5" with the host and each worker in its own process.

    python autogen_hello_distributed.py host localhost:50051
    python autogen_hello_distributed.py worker worker1 localhost:50051
    python autogen_hello_distributed.py worker worker2 localhost:50051 --publish

The host prints ``host ready ADDRESS``; a worker prints ``registered NAME`` once its agent is
registered, then its agent's lines. Each runs until SIGTERM (``stop_when_signal``), as in the tutorial.
"""

import asyncio
import sys
from dataclasses import dataclass

from autogen_core import DefaultTopicId, MessageContext, RoutedAgent, default_subscription, message_handler

from mesh.autogen import MeshWorkerRuntime as GrpcWorkerAgentRuntime
from mesh.autogen import MeshWorkerRuntimeHost as GrpcWorkerAgentRuntimeHost


@dataclass
class MyMessage:
    content: str


@default_subscription
class MyAgent(RoutedAgent):
    def __init__(self, name: str) -> None:
        super().__init__("My agent")
        self._name = name
        self._counter = 0

    @message_handler
    async def my_message_handler(self, message: MyMessage, ctx: MessageContext) -> None:
        self._counter += 1
        if self._counter > 5:
            return
        content = f"{self._name}: Hello x {self._counter}"
        print(content, flush=True)
        await self.publish_message(MyMessage(content=content), DefaultTopicId())


async def host(address: str) -> None:
    h = GrpcWorkerAgentRuntimeHost(address=address)
    h.start()
    print(f"host ready {h.address}", flush=True)
    await h.stop_when_signal()


async def worker(name: str, address: str, publish: bool) -> None:
    w = GrpcWorkerAgentRuntime(host_address=address)
    await w.start()
    await MyAgent.register(w, name, lambda: MyAgent(name))
    print(f"registered {name}", flush=True)
    if publish:
        await w.publish_message(MyMessage(content="Hello!"), DefaultTopicId())
    await w.stop_when_signal()


if __name__ == "__main__":
    if sys.argv[1] == "host":
        asyncio.run(host(sys.argv[2]))
    else:
        asyncio.run(worker(sys.argv[2], sys.argv[3], "--publish" in sys.argv))
