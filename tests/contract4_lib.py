"""Classes for tests/test_contract4_relay.py (importable by its caller process and its servers)."""

from __future__ import annotations

import json
import time

import mesh


class Maker(metaclass=mesh.RpcMeta):
    """The producer: a stream, a value and an agent's reply, each made slowly."""

    @mesh.stream_func
    def count(self, n, delay):
        for i in range(n):
            time.sleep(delay)
            yield i

    def value(self, delay, v):
        time.sleep(delay)
        return v


class SlowTeller(mesh.AgentBase):
    """An agent whose reply takes a while: its Placeholder is passed on before it exists."""

    def reply(self, x):
        time.sleep(0.3)
        return mesh.Msg(self.name, f"told {x.content}")


class Writer(metaclass=mesh.RpcMeta):
    """The consumer: reads what it is given and writes it to a file (the test reads the file)."""

    def take(self, path, stream, fut, msg):
        open(path + ".started", "w").close()  # the call and its arguments arrived
        items = list(stream)
        value = fut.result(timeout=60)
        with open(path + ".tmp", "w") as fh:
            json.dump({"items": items, "value": value, "msg": msg.content}, fh)
        import os

        os.replace(path + ".tmp", path)
        return len(items)
