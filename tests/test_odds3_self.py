"""``self`` passed on by a hosted object (an argument of a call it makes, its result, a stream item)
travels as a reference to the same actor, as its proxy would; a plain local instance stays a value."""

from __future__ import annotations

import gc
import pickle

import pytest

import mesh
import transport
from mesh import RpcMeta, stream_func
from mesh._core import hosted


class Hub(metaclass=RpcMeta):
    def __init__(self) -> None:
        self.members: list = []

    def register(self, member) -> str:
        self.members.append(member)
        return type(member).__name__

    def poke_all(self) -> list:
        return [m.poke() for m in self.members]


class Member(metaclass=RpcMeta):
    def __init__(self, hub=None) -> None:
        self.pokes = 0
        self.seen = hub.register(self) if hub is not None else None  # self in the constructor

    def poke(self) -> int:
        self.pokes += 1
        return self.pokes

    def join(self, hub) -> str:
        return hub.register(self)

    def count(self) -> int:
        return self.pokes

    def me(self):
        return self

    def in_list(self) -> list:
        return [self, 1]

    def seen_in_init(self):
        return self.seen

    @stream_func
    def selves(self, n: int):
        for _ in range(n):
            yield self


def test_self_passed_to_another_server_reaches_the_same_actor(spawn_server) -> None:
    s1, s2 = spawn_server(port=0), spawn_server(port=0)
    hub = Hub(to_dist={"host": s1.host, "port": s1.port})
    member = Member(to_dist={"host": s2.host, "port": s2.port})
    assert member.join(hub) == "RpcObject"  # the hub got a proxy, not a copy
    assert hub.poke_all() == [1]
    assert hub.poke_all() == [2]
    assert member.count() == 2  # the pokes reached the member itself


def test_self_in_the_constructor_is_a_reference(spawn_server) -> None:
    s1, s2 = spawn_server(port=0), spawn_server(port=0)
    hub = Hub(to_dist={"host": s1.host, "port": s1.port})
    member = Member(hub, to_dist={"host": s2.host, "port": s2.port})
    assert member.seen_in_init() == "RpcObject"
    assert hub.poke_all() == [1]
    assert member.count() == 1


def test_self_returned_is_a_proxy_of_the_same_object(spawn_server) -> None:
    srv = spawn_server(port=0)
    member = Member(to_dist={"host": srv.host, "port": srv.port})
    back = member.me()
    assert isinstance(back, mesh.RpcObject) and back == member
    back.poke()
    assert member.count() == 1
    inside = member.in_list()  # nested in a result too
    assert isinstance(inside[0], mesh.RpcObject) and inside[0] == member and inside[1] == 1
    assert all(x == member for x in member.selves(3))  # and as stream items


def test_self_returned_to_a_caller_in_the_same_process_is_a_proxy(server) -> None:
    member = Member(to_dist={"host": server.host, "port": server.port})
    back = member.me()
    assert isinstance(back, mesh.RpcObject) and back == member  # never the hosted object itself
    back.poke()
    assert member.count() == 1


def test_a_local_instance_still_travels_as_a_value(spawn_server) -> None:
    srv = spawn_server(port=0)
    hub = Hub(to_dist={"host": srv.host, "port": srv.port})
    local = Member()
    assert hub.register(local) == "Member"  # a copy, as before
    assert hub.poke_all() == [1]
    assert local.pokes == 0


class Plain:
    pass


def _describe(record, obj) -> tuple:
    return ("tcp://127.0.0.1:9", "obj-1", type(obj).__name__, {"poke": "sync"}, None, "inst", None)


class _Record:  # what a server keeps per object (its Actor): the object, once built
    def __init__(self, obj=None) -> None:
        self.obj = obj


def test_the_codec_hook_only_touches_hosted_rpc_objects() -> None:
    registry = hosted.Registry(_describe)
    obj = Member()
    hosted.host(registry, obj, _Record(obj))
    try:
        body, bufs = transport.encode([obj, {"k": obj}])
        got = transport.decode(body, bufs)
        assert type(got[0]) is mesh.RpcObject and got[0]._mesh_id == "obj-1" and got[1]["k"] == got[0]
        assert type(pickle.loads(pickle.dumps(obj))) is Member  # only the wire codec sends references
    finally:
        hosted.unhost(registry, obj)
    body, bufs = transport.encode(obj)
    assert type(transport.decode(body, bufs)) is Member  # no longer hosted: a value again
    plain = Plain()
    hosted.host(registry, plain, _Record(plain))  # not an RpcMeta class: the hook is never asked
    try:
        body, bufs = transport.encode(plain)
        assert type(transport.decode(body, bufs)) is Plain
    finally:
        hosted.unhost(registry, plain)


def test_an_entry_names_only_its_own_object_and_goes_with_its_registry() -> None:
    registry = hosted.Registry(_describe)
    obj = Member()
    hosted.host(registry, obj, _Record(Member()))  # a record of another object: the id is stale
    assert hosted.reference(obj) is None
    hosted.host(registry, obj, _Record(obj))
    assert hosted.reference(obj) is not None
    del registry
    gc.collect()
    assert hosted.reference(obj) is None  # a server that went takes its entries with it


def test_constructing_hosts_only_that_class_before_its_init() -> None:
    seen = []
    registry = hosted.Registry(_describe)

    class Probe(metaclass=RpcMeta):
        def __init__(self, x: int) -> None:
            seen.append(hosted.reference(self))
            self.inner = Member()  # made by the constructor: not hosted
            self.x = x

    record = _Record()
    with hosted.constructing(Probe, registry, record):
        p = Probe(3)
    record.obj = p  # (the server sets it once the constructor returned)
    try:
        assert seen[0] is not None and seen[0][2] == "Probe" and p.x == 3
        assert hosted.reference(p.inner) is None
        assert hosted.reference(p) is not None
        assert p._mesh_init_args == ((3,), {})
    finally:
        hosted.unhost(registry, p)
    assert hosted.reference(p) is None
    with pytest.raises(ZeroDivisionError):
        class Bad(metaclass=RpcMeta):
            def __init__(self) -> None:
                self.me = self
                1 / 0

        with hosted.constructing(Bad, registry, _Record()):
            Bad()
    assert not registry.by_id  # never built: not hosted


def test_a_durable_object_passes_itself_as_a_durable_reference(spawn_server, tmp_path) -> None:
    srv = spawn_server(port=0, state_store=str(tmp_path / "store"))
    member = Member(to_dist={"host": srv.host, "port": srv.port, "checkpoint": True, "max_restarts": 1})
    back = member.me()
    assert back == member and back._mesh_durable is not None  # it follows the object like its own proxy
    assert back._mesh_durable["store"] == member._mesh_durable["store"]
    assert back._mesh_durable["max_restarts"] == 1
    back.poke()
    assert member.count() == 1
