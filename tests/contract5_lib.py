"""Classes of tests/test_contract5_*.py that a second process imports by name (not by value)."""

from __future__ import annotations

import time

import mesh


class Calc(metaclass=mesh.RpcMeta):
    def __init__(self, k=1):
        self.k = k
        self.seen = []

    def mul(self, x):
        return x * self.k

    def slow(self, t, v):
        time.sleep(t)
        return v

    def note(self, x):
        self.seen.append(x)
        return list(self.seen)

    def boom(self, what):
        raise KeyError(what)

    @mesh.stream_func
    def gen(self, n, t=0.0):
        for i in range(n):
            time.sleep(t)
            yield i


class Bot(mesh.AgentBase):
    def reply(self, x):
        return mesh.Msg(self.name, f"re:{x.content}", role="assistant")
