"""The seed's two-worker "Hello x 5" (AutoGen's distributed runtime tutorial) on the mesh.

Only the runtime import differs from the tutorial: ``autogen_ext.runtimes.grpc`` became
``mesh.autogen``. The tutorial's ``await asyncio.sleep(5)`` is kept as the way to let agents run;
``MESH_HELLO_PORT`` overrides the tutorial's port 50051.
"""

import asyncio
import os
from dataclasses import dataclass

from autogen_core import DefaultTopicId, MessageContext, RoutedAgent, default_subscription, message_handler

from mesh.autogen import MeshWorkerRuntime as GrpcWorkerAgentRuntime
from mesh.autogen import MeshWorkerRuntimeHost as GrpcWorkerAgentRuntimeHost

PORT = os.environ.get("MESH_HELLO_PORT", "50051")
WAIT = float(os.environ.get("MESH_HELLO_WAIT", "5"))


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


async def main() -> None:
    host = GrpcWorkerAgentRuntimeHost(address=f"localhost:{PORT}")
    host.start()

    worker1 = GrpcWorkerAgentRuntime(host_address=f"localhost:{PORT}")
    await worker1.start()
    await MyAgent.register(worker1, "worker1", lambda: MyAgent("worker1"))

    worker2 = GrpcWorkerAgentRuntime(host_address=f"localhost:{PORT}")
    await worker2.start()
    await MyAgent.register(worker2, "worker2", lambda: MyAgent("worker2"))

    await worker2.publish_message(MyMessage(content="Hello!"), DefaultTopicId())

    # Let the agents run for a while.
    await asyncio.sleep(WAIT)

    await worker1.stop()
    await worker2.stop()
    await host.stop()


if __name__ == "__main__":
    asyncio.run(main())
