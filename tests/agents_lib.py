"""Agent classes shared by tests (importable by servers started from the tests)."""

from __future__ import annotations

import os
import time

from mesh import AgentBase, Msg, RpcMeta, async_func


class Echo(AgentBase):
    """Replies with its name and the content it got."""

    def reply(self, x: Msg | None = None) -> Msg:
        self.observe(x)
        return Msg(self.name, None if x is None else x.content)


class Sleeper(AgentBase):
    def __init__(self, name: str, delay: float = 0.3) -> None:
        super().__init__(name)
        self.delay = delay

    def reply(self, x: Msg | None = None) -> Msg:
        time.sleep(self.delay)
        return Msg(self.name, [] if x is None else [*x.content, self.name] if isinstance(x.content, list) else x.content)


class Appender(AgentBase):
    """Appends its name to the list in x.content (a chain marker)."""

    def reply(self, x: Msg | None = None) -> Msg:
        content = [] if x is None else list(x.content)
        return Msg(self.name, content + [self.name])


class Joiner(AgentBase):
    """Replies with the contents of several messages (a DAG join)."""

    def __init__(self, name: str, delay: float = 0.0) -> None:
        super().__init__(name)
        self.delay = delay

    def reply(self, x=None) -> Msg:
        time.sleep(self.delay)
        msgs = x if isinstance(x, list) else [x]
        return Msg(self.name, [m.content for m in msgs])


class Caller(AgentBase):
    """Calls another agent from inside its reply and waits for the answer."""

    def __init__(self, name: str, peer=None) -> None:
        super().__init__(name)
        self.peer = peer

    def set_peer(self, peer) -> None:
        self.peer = peer

    def reply(self, x: Msg | None = None) -> Msg:
        answer = self.peer(x)  # a placeholder when the peer is remote
        return Msg(self.name, f"{self.name} got: {answer.content}")

    def ask_back(self, depth: int) -> str:
        if depth <= 0:
            return self.name
        return f"{self.name}>{self.peer.ask_back(depth - 1)}"


class Producer(metaclass=RpcMeta):
    @async_func
    def make(self, n: int, delay: float = 0.0) -> bytes:
        time.sleep(delay)
        return b"p" * n

    @async_func
    def fail(self) -> None:
        raise RuntimeError("producer failed")

    def pid(self) -> int:
        return os.getpid()


class Consumer(metaclass=RpcMeta):
    def size(self, data) -> int:
        return len(data)

    def forward(self, data):
        return data  # returns the future it got, unread

    def call_on(self, proxy, n: int) -> int:
        return proxy.add(n)


class Store(metaclass=RpcMeta):
    def __init__(self) -> None:
        self.total = 0

    def add(self, n: int) -> int:
        self.total += n
        return self.total


class Holder(metaclass=RpcMeta):
    """Keeps futures it is given; reads, passes on or drops them on request."""

    def __init__(self) -> None:
        self.held: dict[str, object] = {}

    def hold(self, key: str, future) -> None:
        self.held[key] = future

    def size(self, key: str) -> int:
        return len(self.held[key])

    def give(self, key: str, other) -> None:
        other.hold(key, self.held[key])  # passes the future on, unread

    def drop(self, key: str) -> None:
        del self.held[key]
