"""review1: the pipelined first creation (mesh._create_req) must not keep what a dropped proxy held."""

from __future__ import annotations

import gc
import logging
import weakref

import pytest

import mesh
from mesh import RpcMeta


class Payload:
    def __init__(self) -> None:
        self.data = bytearray(4 << 20)


class Refuses(metaclass=RpcMeta):
    def __init__(self, payload) -> None:
        raise ValueError("refused")

    def get(self) -> int:
        return 1


def test_a_failed_first_creation_frees_its_arguments_once_its_proxy_is_dropped(server, caplog) -> None:
    caplog.set_level(logging.ERROR, logger="mesh")  # (its failure is logged once as a warning)
    payload = Payload()
    ref = weakref.ref(payload)
    proxy = Refuses(payload, to_dist={"host": server.host, "port": server.port})
    with pytest.raises(mesh.RemoteError):
        proxy.get()  # the constructor's error at first use
    del proxy, payload
    for _ in range(3):
        gc.collect()
    assert ref() is None, "the constructor's arguments outlive the failed proxy"
