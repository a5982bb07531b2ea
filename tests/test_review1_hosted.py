"""review1: the hosted-object registry (mesh._core.hosted) must not keep a stopped server's objects alive."""

from __future__ import annotations

import gc


import mesh
from mesh import RpcMeta
from mesh._core import hosted


class Kept(metaclass=RpcMeta):
    def __init__(self) -> None:
        self.blob = bytearray(1 << 20)  # what a leak would hold

    def ping(self) -> int:
        return 1


def _live() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is Kept)


def test_an_in_process_servers_objects_are_freed_after_its_shutdown() -> None:
    srv = mesh.AgentServer(port=0, capacity=8, advertise=False).launch(in_subprocess=False)
    try:
        obj = Kept(to_dist={"host": srv.host, "port": srv.port})
        assert obj.ping() == 1
        assert _live() == 1
    finally:
        srv.shutdown()
    mesh.shutdown()
    del srv, obj
    for _ in range(3):
        gc.collect()
    held = sum(len(r.by_id) for r in list(hosted._registries))
    assert _live() == 0, f"{_live()} hosted object(s) still alive; {held} entry(ies) in mesh._core.hosted"
