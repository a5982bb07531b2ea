"""``mesh.msghub``: AgentScope's message hub over plain mesh agents (no AutoGen needed; moved here
from tests/test_autogen.py, which is skipped without autogen-core)."""

from __future__ import annotations

import mesh


def test_msghub_is_also_reexported_by_mesh_autogen():
    import mesh.autogen

    assert mesh.autogen.msghub is mesh.msghub and mesh.autogen.MsgHub is mesh.MsgHub


class Talker(mesh.AgentBase):
    """Replies with the names of the speakers it has seen so far."""

    def reply(self, x=None):
        return mesh.Msg(self.name, [m.name for m in self.memory])


def test_msghub_each_reply_is_observed_by_the_others():
    server = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=False)
    try:
        a = Talker("a", to_dist={"host": server.host, "port": server.port})
        b = Talker("b", to_dist={"host": server.host, "port": server.port})
        c = Talker("c")  # a local agent takes part too
        with mesh.msghub([a, b, c], announcement=mesh.Msg("host", "welcome")) as hub:
            ra = hub(a)
            rb = hub(b)
            rc = hub(c)
        assert ra.content == ["host"]
        assert rb.content == ["host", "a"]
        assert rc.content == ["host", "a", "b"]
        assert [m.name for m in c.memory] == ["host", "a", "b"]
        assert [m.name for m in a.memory] == ["host", "b", "c"]
        with mesh.msghub([a, b]) as hub:
            hub.delete(b)
            hub.broadcast(mesh.Msg("host", "only a"))
        assert [m.content for m in a.memory][-1] == "only a"
        assert [m.name for m in b.memory] == ["host", "a", "c"]
    finally:
        server.shutdown()
