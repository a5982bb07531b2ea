"""Futures and proxies pickled by release 0.1.0 (e9ff0b4, which kept them in ``mesh._future`` and
``mesh._proxy``) unpickle in this release and read their values. The byte strings below were made
by that release's own code (``pickle.dumps`` of ``mesh._future._rebuild(...)`` and of a
``mesh._proxy.RpcObject``; cloudpickle writes the same references)."""

from __future__ import annotations

import pickle

import cloudpickle

import mesh
from mesh._core.address import normalize_address

OLD_ASYNC = (b'\x80\x04\x95Z\x00\x00\x00\x00\x00\x00\x00\x8c\x0cmesh._future\x94\x8c\x08_rebuild\x94\x93\x94(\x89'
             b'\x8c\x14tcp://127.0.0.1:5555\x94\x8c\x120123456789abcdef.7\x94NN\x8c\x06a1b2c3\x94t\x94R\x94.')
OLD_ASYNC_P2 = (b'\x80\x02cmesh._future\n_rebuild\nq\x00(\x89X\x14\x00\x00\x00tcp://127.0.0.1:5555q\x01X\x12\x00\x00'
                b'\x000123456789abcdef.7q\x02NNX\x06\x00\x00\x00a1b2c3q\x03tq\x04Rq\x05.')
OLD_PLACEHOLDER = (b'\x80\x04\x95t\x00\x00\x00\x00\x00\x00\x00\x8c\x0cmesh._future\x94\x8c\x08_rebuild\x94\x93\x94('
                   b'\x88\x8c\x14tcp://127.0.0.1:5555\x94\x8c\x120123456789abcdef.8\x94\x8c\x18redis://127.0.0.1:6379'
                   b'/0\x94N\x8c\x06a1b2c3\x94t\x94R\x94.')
OLD_CLOUD_LIST = (b'\x80\x05\x95\x9b\x00\x00\x00\x00\x00\x00\x00]\x94(\x8c\x0cmesh._future\x94\x8c\x08_rebuild\x94\x93'
                  b'\x94(\x89\x8c\x14tcp://127.0.0.1:5555\x94\x8c\x120123456789abcdef.7\x94NN\x8c\x06a1b2c3\x94t\x94R'
                  b'\x94h\x03(\x88h\x04\x8c\x120123456789abcdef.8\x94\x8c\x18redis://127.0.0.1:6379/0\x94Nh\x06t\x94R'
                  b'\x94e.')
OLD_PROXY = (b'\x80\x04\x95\x8f\x00\x00\x00\x00\x00\x00\x00\x8c\x0bmesh._proxy\x94\x8c\tRpcObject\x94\x93\x94(\x8c'
             b'\x14tcp://127.0.0.1:5555\x94\x8c 9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f\x94\x8c\x05Store\x94}\x94(\x8c\x03add'
             b'\x94\x8c\x04sync\x94\x8c\x05later\x94\x8c\x05async\x94uN\x8c\x06a1b2c3\x94t\x94R\x94.')


def _fields(fut):
    d = fut.__dict__
    return d["_mesh_address"], d["_mesh_task"], d["_mesh_pool"], d["_mesh_inst"], d["_mesh_ref"]


def test_the_bytes_of_0_1_0_unpickle_as_this_release_s_futures_and_proxies():
    for data in (OLD_ASYNC, OLD_ASYNC_P2):
        fut = pickle.loads(data)
        assert type(fut) is mesh.AsyncResult and not fut.done()
        assert _fields(fut) == ("tcp://127.0.0.1:5555", "0123456789abcdef.7", None, "a1b2c3", None)
    ph = pickle.loads(OLD_PLACEHOLDER)
    assert type(ph) is mesh.Placeholder
    assert _fields(ph) == ("tcp://127.0.0.1:5555", "0123456789abcdef.8", "redis://127.0.0.1:6379/0", "a1b2c3", None)
    a, p = cloudpickle.loads(OLD_CLOUD_LIST)
    assert (type(a), type(p)) == (mesh.AsyncResult, mesh.Placeholder)
    proxy = pickle.loads(OLD_PROXY)
    assert type(proxy) is mesh.RpcObject and proxy._mesh_cls == "Store" and proxy._mesh_durable is None
    assert proxy._mesh_methods == {"add": "sync", "later": "async"}


class Keeper(metaclass=mesh.RpcMeta):
    def __init__(self) -> None:
        self.n = 0

    def add(self, k: int) -> int:
        self.n += k
        return self.n

    @mesh.async_func
    def later(self, k: int) -> int:
        return k * 10


def _as_010(where: bytes, args: tuple) -> bytes:
    """A pickle as 0.1.0 wrote it: a call of ``where`` (``module\\nname``) with ``args`` (protocol 2)."""
    return b"\x80\x02c" + where + b"\n" + pickle.dumps(args, 2)[2:-1] + b"R."


def test_a_0_1_0_pickle_of_a_live_future_and_proxy_reads_the_value(server):
    k = Keeper(to_dist={"host": server.host, "port": server.port})
    fut = k.later(4)
    assert fut.result(timeout=10) == 40
    d = fut.__dict__
    data = _as_010(b"mesh._future\n_rebuild", (False, d["_mesh_address"], d["_mesh_task"], None))
    assert pickle.loads(data).result(timeout=10) == 40  # (the 11-22 form: no ref, no inst)
    data = _as_010(b"mesh._proxy\nRpcObject", (
        normalize_address(server.host, server.port), k._mesh_id, "Keeper", dict(k._mesh_methods), None, k._mesh_inst))
    again = pickle.loads(data)
    assert again.add(2) == 2 and k.add(3) == 5  # the same object
