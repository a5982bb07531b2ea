"""Classes the benchmarks put on agent servers.

They live in an importable module (not ``__main__``), so a server started by
the benchmark imports them by name (``MESH_SYS_PATH``) instead of receiving
them by value.
"""

from __future__ import annotations

from typing import Any

import mesh
from mesh import AgentBase, Msg, RpcMeta, async_func


class Echo(metaclass=RpcMeta):
    """No-op methods: the cost measured is the mesh's own."""

    def echo(self, s: Any) -> Any:
        return s

    @async_func
    def work(self, x: Any) -> Any:
        return x

    def nbytes(self, data: bytes) -> int:
        return len(data)


class Producer(metaclass=RpcMeta):
    @async_func
    def produce(self, n: int) -> bytes:
        return b"\x01" * n


class Consumer(metaclass=RpcMeta):
    def consume(self, data: bytes) -> int:
        return len(data)


class Replier(AgentBase):
    """An agent whose reply is trivial."""

    def reply(self, x: Msg | None = None) -> Msg:
        return Msg(self.name, "ok", role="assistant")


__all__ = ["Consumer", "Echo", "Producer", "Replier", "mesh"]
