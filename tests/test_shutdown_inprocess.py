"""mesh.shutdown() ends this process's client; servers it hosts (launch(in_subprocess=False)) go on
serving until they are shut down themselves (API.md: shutdown stops *child* servers)."""

from __future__ import annotations

import mesh
from mesh._core import runtime


class Counter(metaclass=mesh.RpcMeta):
    def __init__(self) -> None:
        self.n = 0

    def add(self) -> int:
        self.n += 1
        return self.n


def test_an_in_process_server_serves_on_after_mesh_shutdown():
    srv = mesh.AgentServer(advertise=False).launch(in_subprocess=False)
    try:
        c = Counter(to_dist={"host": srv.host, "port": srv.port, "detached": True})
        assert c.add() == 1
        mesh.shutdown()
        again = Counter(to_dist={"host": srv.host, "port": srv.port})  # a new client, the same server
        assert again.add() == 1
        assert runtime.current(create=False) is not None
    finally:
        mesh.shutdown()
        srv.shutdown()
    # the last in-process server stopped after the client closed: the runtime went with it
    assert runtime.current(create=False) is None


def test_shutdown_without_in_process_servers_closes_the_runtime():
    runtime.current()  # made on first use (a client's first request makes it so)
    assert runtime.current(create=False) is not None
    mesh.shutdown()
    assert runtime.current(create=False) is None
