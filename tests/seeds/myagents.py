# Agents of AgentScope's developer-guide launcher sample (`from myagents import AgentA, AgentB, AgentC`).
from mesh import AgentBase, Msg


class AgentA(AgentBase):
    def reply(self, x=None):
        return Msg(self.name, "A")


class AgentB(AgentBase):
    def reply(self, x=None):
        return Msg(self.name, "B")


class AgentC(AgentBase):
    def reply(self, x=None):
        return Msg(self.name, "C")
