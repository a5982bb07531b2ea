"""A future pickled into call arguments beside a part that must go by value (a lambda): the C
pickler's try is abandoned for cloudpickle, which reduces the future again; the borrower the first
try recorded must not stay (it would never be released, and its result would stay held)."""

from __future__ import annotations

import mesh
from transport import _pickler


class Keeper(metaclass=mesh.RpcMeta):
    def make(self, n: int) -> bytes:
        return b"k" * n

    def take(self, msg) -> int:
        return len(msg.content["fut"].result()) + msg.content["fn"](0)


def test_a_future_beside_a_lambda_records_one_borrower(server):
    keeper = Keeper(to_dist={"host": server.host, "port": server.port})
    fut = keeper.make.remote(10)
    assert fut.result(timeout=10) == b"k" * 10
    _pickler._cloudpickled.clear()  # the C pickler tries the arguments first
    # one pickled value (a Msg) holding both: the future is reduced before the lambda stops the try
    assert keeper.take(mesh.Msg("user", {"fut": fut, "fn": lambda x: x + 1})) == 11
    assert len(fut.__dict__["_mesh_children"]) == 1  # the borrower sent, not also the abandoned try's
