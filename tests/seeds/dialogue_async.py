# An AgentScope 1.0-style two-agent dialogue, written for asyncio (async def reply / observe,
# await agent(msg)), run centralised and then distributed on mesh with only `.to_dist()` added.
# Changed lines: imports (was: agentscope.agent / agentscope.message), the launcher, `.to_dist()`.
import asyncio

from mesh import AgentBase, Msg, RpcAgentServerLauncher


class Questioner(AgentBase):
    async def reply(self, x=None):
        turn = 0 if x is None else x.metadata["turn"] + 1
        await asyncio.sleep(0.01)  # e.g. an LLM call: the loop is free meanwhile
        return Msg(self.name, f"question {turn}" if turn < 3 else "bye", metadata={"turn": turn})


class Answerer(AgentBase):
    async def observe(self, x):
        await asyncio.sleep(0)
        self.memory.append(x)

    async def reply(self, x=None):
        await self.observe(x)
        await asyncio.sleep(0.01)
        return Msg(self.name, f"answer to {x.content} ({len(self.memory)} heard)", metadata=x.metadata)


async def converse(a, b):
    transcript = []
    x = None
    while x is None or x.content != "bye":
        x = await a(x)
        transcript.append(f"{x.name}: {x.content}")
        if x.content != "bye":
            x = await b(x)
            transcript.append(f"{x.name}: {x.content}")
    return transcript


async def main():
    local = await converse(Questioner("Q"), Answerer("A"))
    dist = await converse(Questioner("Q").to_dist(), Answerer("A").to_dist(host="localhost", port=12003))
    assert local == dist, (local, dist)
    print("\n".join(dist))
    print("dialogue_async ok")


if __name__ == "__main__":
    server = RpcAgentServerLauncher(host="localhost", port=12003)
    server.launch()
    try:
        asyncio.run(main())
    finally:
        server.shutdown()
