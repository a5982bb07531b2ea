"""Objects of the durable-agent benchmark (importable by server subprocesses)."""

from __future__ import annotations

import mesh


class SmallState(metaclass=mesh.RpcMeta):
    """About 1 KB of state in public attributes."""

    def __init__(self) -> None:
        self.blob = "x" * 1000
        self.calls = 0

    def touch(self, i: int) -> int:
        self.calls = i
        return i


class Memory(mesh.AgentBase):
    """An agent with a memory of ``size`` messages (its state_dict includes them)."""

    def __init__(self, name: str, size: int = 1000) -> None:
        super().__init__(name)
        self.memory = [mesh.Msg("user", f"message {i} " + "y" * 40) for i in range(size)]

    def touch(self, i: int) -> int:
        self.memory[i % len(self.memory)].metadata = {"seen": i}
        return i

    def reply(self, x=None):
        return mesh.Msg(self.name, "ok")


class GrowingMemory(Memory):
    """A memory of ``size`` messages to which every call adds one (the usual life of an LLM agent)."""

    def add(self, i: int) -> int:
        self.memory.append(mesh.Msg("user", f"message {i} " + "y" * 40))
        return i
