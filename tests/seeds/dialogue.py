# AgentScope's two-agent dialogue (centralised vs distributed), run on mesh.
# Changed lines: imports. AgentA/AgentB stand for the tutorial's "..." agents; the server of
# "Machine 2" (ip_b:12002) runs in this process via RpcAgentServerLauncher (launch line changed).
from mesh import AgentBase, Msg, DistConf, RpcAgentServerLauncher   # was: agentscope.agents / message / server


class AgentA(AgentBase):
    def reply(self, x=None):
        turn = 0 if x is None else x.metadata["turn"] + 1
        return Msg(self.name, "exit" if turn < 4 else "done", metadata={"turn": turn})


class AgentB(AgentBase):
    def reply(self, x=None):
        self.observe(x)
        return Msg(self.name, x.content, metadata={"turn": x.metadata["turn"]})


def converse(a, b):
    x = None
    while x is None or x.content == "exit":
        x = a(x)
        x = b(x)
    return x


if __name__ == "__main__":
    server = RpcAgentServerLauncher(host="localhost", port=12002)
    server.launch()
    try:
        # 智能体全部中心化
        a = AgentA(name="A")
        b = AgentB(name="B")
        local = converse(a, b)
        # 智能体分布式部署: AgentA 子进程模式, AgentB 独立进程模式
        a = AgentA(name="A").to_dist()
        b = AgentB(name="B").to_dist(host="localhost", port=12002)
        dist = converse(a, b)
        # 初始化时传入 to_dist
        a = AgentA(name="A", to_dist=True)
        b = AgentB(name="B", to_dist=DistConf(host="localhost", port=12002))
        dist2 = converse(a, b)
        assert (local.content, local.metadata) == (dist.content, dist.metadata) == (dist2.content, dist2.metadata) == ("done", {"turn": 4})
        assert len(b.memory) == 5
        print("dialogue ok")
    finally:
        server.shutdown()
