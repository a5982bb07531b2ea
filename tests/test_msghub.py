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


def test_calling_participants_directly_inside_the_with_broadcasts_as_agentscope_does():
    # AgentScope: `with msghub([a, b, c]): x = a(x); x = b(x)` shows each reply to the others
    # (their audience); code written for it runs with only its imports changed.
    server = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=False)
    try:
        where = {"host": server.host, "port": server.port}
        a, b = Talker("a", to_dist=where), Talker("b", to_dist=where)
        c = Talker("c")  # local
        with mesh.msghub([a, b, c], announcement=mesh.Msg("host", "welcome")):
            ra = a()
            rb = b(ra)  # b has heard the host and a before it speaks
            rc = c(rb)
            rb2 = b.__call__.remote(rc)  # the same through .remote()
        assert ra.content == ["host"]
        assert rb.content == ["host", "a"]
        assert rc.content == ["host", "a", "b"]
        assert rb2.content == ["host", "a", "c"]  # a speaker does not observe itself
        assert [m.name for m in a.memory] == ["host", "b", "c", "b"]
        assert [m.name for m in c.memory] == ["host", "a", "b", "b"]
        a()  # outside the with: nobody hears it
        with mesh.msghub([a, b]) as hub:
            hub(a)  # hub(agent) still speaks once, not twice
        assert [m.name for m in b.memory] == ["host", "a", "c", "a"]  # hub(a) heard once, a() outside not at all
        assert [m.name for m in c.memory] == ["host", "a", "b", "b"]  # not in the second hub
    finally:
        server.shutdown()


def test_a_participant_of_two_hubs_speaks_in_both_and_delete_stops_it():
    a, b, c = Talker("a"), Talker("b"), Talker("c")
    with mesh.msghub([a, b]), mesh.msghub([a, c]) as second:
        a()
        second.delete(a)
        a()
    assert [m.name for m in b.memory] == ["a", "a"]
    assert [m.name for m in c.memory] == ["a"]
