"""Classes for the durable-agent tests (importable by server subprocesses: they get the tests' sys.path)."""

from __future__ import annotations

import asyncio
import threading

import mesh


class Counter(metaclass=mesh.RpcMeta):
    """State in public attributes (no state_dict): ``n`` and ``log``."""

    def __init__(self, start: int = 0) -> None:
        self.n = start
        self.log: list[int] = []
        self._scratch = "private: not saved"

    def add(self, k: int) -> int:
        self.n += k
        self.log.append(k)
        return self.n

    def add_then_fail(self, k: int) -> None:
        self.n += k
        raise ValueError("refused")

    def get(self) -> int:
        return self.n

    def hold(self, k: int, path: str) -> int:
        """Add ``k``, then wait until ``path`` exists (never, if the server dies meanwhile)."""
        import os
        import time

        self.n += k
        with open(path + ".started", "w"):
            pass
        while not os.path.exists(path):
            time.sleep(0.01)
        return self.n

    def make_unpicklable(self) -> None:
        self.lock = threading.Lock()

    def drop_unpicklable(self) -> None:
        self.__dict__.pop("lock", None)


class Ledger(metaclass=mesh.RpcMeta):
    """State through state_dict / load_state_dict (a private attribute, so only they can save it)."""

    def __init__(self) -> None:
        self._entries: list[str] = []
        self.loaded = False
        self.fail_state = False

    def write(self, entry: str) -> int:
        self._entries.append(entry)
        return len(self._entries)

    def entries(self) -> list[str]:
        return list(self._entries)

    def break_state(self) -> None:
        self.fail_state = True

    def state_dict(self) -> dict:
        if self.fail_state:
            raise RuntimeError("state_dict is broken")
        return {"entries": list(self._entries)}

    def load_state_dict(self, state: dict) -> None:
        self._entries = list(state["entries"])
        self.loaded = True


class AsyncCounter(metaclass=mesh.RpcMeta):
    def __init__(self) -> None:
        self.n = 0

    async def add(self, k: int) -> int:
        await asyncio.sleep(0)
        self.n += k
        return self.n

    def get(self) -> int:
        return self.n


class Caller(metaclass=mesh.RpcMeta):
    """Holds a proxy passed to it, and calls it."""

    def __init__(self) -> None:
        self.target = None

    def keep(self, proxy) -> None:
        self.target = proxy

    def add(self, k: int) -> int:
        return self.target.add(k)


class Notes(mesh.AgentBase):
    """An agent whose memory is its state (AgentBase.state_dict)."""

    def reply(self, x=None):
        self.observe(x)
        return mesh.Msg(self.name, f"{len(self.memory)} notes")
