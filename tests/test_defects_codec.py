"""Issue 10, points 1 and 21, end to end: deep values never kill a process; what cannot travel is refused."""

from __future__ import annotations

import socket
import threading

import msgpack
import pytest
import zmq

import mesh
from agents_lib import Store
from mesh import AgentBase, MeshError, Msg, RemoteError, RpcMeta
from mesh._errors import SerializationError

SIG = b"AMSH\x01"


class Deep(metaclass=RpcMeta):
    def depth(self, value) -> int:
        n = 0
        while type(value) is tuple and value:
            value, n = value[0], n + 1
        return n

    def make(self, n: int):
        value: tuple = ()
        for _ in range(n):
            value = (value,)
        return value

    def take(self, *args, **kwargs) -> int:
        return len(args) + len(kwargs)


def deep(n: int) -> tuple:
    value: tuple = ()
    for _ in range(n):
        value = (value,)
    return value


def alive(srv) -> None:
    assert srv._proc.poll() is None, f"server died with {srv._proc.poll()}"
    assert Store(to_dist={"host": srv.host, "port": srv.port}).add(1) == 1


def test_deep_tuples_as_arguments_and_results(spawn_server):
    srv = spawn_server(port=0)
    d = Deep(to_dist={"host": srv.host, "port": srv.port})
    other = Store(to_dist={"host": srv.host, "port": srv.port})
    assert d.depth(deep(200)) == 200  # travels (pickled below the msgpack depth bound)
    assert d.make(200) == deep(200)
    with pytest.raises(MeshError):  # too deep even for pickle: refused before sending
        d.depth(deep(10_000))
    with pytest.raises(RemoteError, match="cannot be sent back"):
        d.make(10_000)
    alive(srv)
    assert other.add(2) == 2  # the other agent on that server kept answering
    assert d.depth(deep(3)) == 3


def test_a_crafted_200_deep_tuple_does_not_kill_the_server(spawn_server):
    """The issue's 937 bytes, sent raw: before the fix the server died of SIGSEGV with every agent on it."""
    srv = spawn_server(port=0)
    d = Deep(to_dist={"host": srv.host, "port": srv.port})
    assert d.depth(deep(1)) == 1  # created (to_dist() pipelines it) before raw frames name it
    body = msgpack.packb([])
    for _ in range(200):
        body = msgpack.packb(msgpack.ExtType(3, body))
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    try:
        s.connect(srv.address)
        for i, payload in enumerate([msgpack.packb([[msgpack.ExtType(3, body)], {}]), body]):
            header = {"op": "call", "id": i + 1, "obj": d._mesh_id, "m": "depth", "chain": "x.1", "sess": "evil"}
            s.send_multipart([SIG, msgpack.packb(header), payload])
            assert s.poll(10_000), "no reply"
            frames = s.recv_multipart()
            reply = msgpack.unpackb(frames[1], raw=False)
            assert reply["op"] == "err" and reply["re"] == i + 1 and "nested" in reply["msg"]
    finally:
        s.close(0)
        ctx.term()
    alive(srv)
    assert d.depth(deep(5)) == 5


def test_a_deep_reply_from_a_rogue_server_is_a_mesh_error():
    """As a return value a deep tuple killed the client: now the client refuses it."""
    from mesh.client._replies import decode_reply

    body = msgpack.packb([])
    for _ in range(200):
        body = msgpack.packb(msgpack.ExtType(3, body))
    with pytest.raises(MeshError, match="nested"):
        decode_reply(({"op": "ok", "re": 1}, body, []), "tcp://127.0.0.1:1")


class WebAgent(AgentBase):
    def __init__(self, name: str, f=None, **kwargs) -> None:
        super().__init__(name, **kwargs)
        self.f = f

    def reply(self, x=None) -> Msg:
        return Msg(self.name, "ok")


class Holder:
    def __init__(self, thing) -> None:
        self.thing = thing


def _gen():
    yield 1


@pytest.fixture
def untransferables(tmp_path):
    opened = []

    def make(kind):
        if kind == "text file":
            f = open(tmp_path / "t.txt", "w+")  # noqa: SIM115
        elif kind == "binary file":
            f = open(tmp_path / "b.bin", "wb")  # noqa: SIM115
        elif kind == "socket":
            f = socket.socket()
        elif kind == "zmq socket":
            f = zmq.Context.instance().socket(zmq.DEALER)
        else:
            return {
                "lock": threading.Lock(), "rlock": threading.RLock(), "condition": threading.Condition(),
                "event": threading.Event(), "generator": _gen(), "thread": threading.Thread(target=print),
            }[kind]
        opened.append(f)
        return f

    yield make
    for f in opened:
        f.close()


KINDS = {
    "text file": "an open file", "binary file": "an open file", "socket": "a socket", "zmq socket": "a ZeroMQ socket",
    "lock": "a lock", "rlock": "a lock", "condition": "a condition", "event": "an event", "generator": "a generator",
    "thread": "a thread",
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_what_cannot_travel_is_refused_naming_the_argument(server, untransferables, kind):
    """Before: an open text file arrived as a StringIO; the rest failed with cloudpickle's words and no argument name."""
    thing = untransferables(kind)
    where = {"host": server.host, "port": server.port}
    with pytest.raises(SerializationError, match=rf"argument 'f' of WebAgent\(\.\.\.\): {KINDS[kind]}") as info:
        WebAgent("w", f=thing, to_dist=where)
    assert isinstance(info.value, TypeError) and "cannot travel to another process" in str(info.value)
    with pytest.raises(SerializationError, match=rf"argument 'f' of WebAgent\(\.\.\.\): {KINDS[kind]}"):
        WebAgent("w", thing, to_dist=where)  # positional: named from the signature
    with pytest.raises(SerializationError, match=rf"argument 'f' of WebAgent\(\.\.\.\): {KINDS[kind]}"):
        WebAgent("w", f=Holder([thing])).to_dist(**where)  # nested in another object, via to_dist()
    d = Deep(to_dist=where)
    with pytest.raises(SerializationError, match=rf"argument 2 of take\(\.\.\.\): {KINDS[kind]}"):
        d.take(1, thing)
    with pytest.raises(SerializationError, match=rf"argument 'x' of take\(\.\.\.\): {KINDS[kind]}"):
        d.take(x={"k": thing})
    assert d.take(1, 2) == 2  # nothing was left half-sent


def test_in_memory_buffers_still_travel(server):
    import io

    d = Deep(to_dist={"host": server.host, "port": server.port})
    assert d.take(io.StringIO("x"), io.BytesIO(b"y")) == 2


class Stringy(AgentBase):
    def reply(self, x=None):
        return "hello"


class Nothing(AgentBase):
    def reply(self, x=None):
        return None


def test_reply_must_return_a_msg(server):
    """Before: the caller got "'str' object has no attribute 'content'" from the placeholder."""
    where = {"host": server.host, "port": server.port}
    a = Stringy("s", to_dist=where)
    with pytest.raises(RemoteError, match=r"Stringy\.reply must return a Msg, but it returned str 'hello'"):
        _ = a(Msg("u", "q")).content
    with pytest.raises(RemoteError, match=r"Stringy\.reply must return a Msg"):
        a.reply(Msg("u", "q")).result(timeout=10)
    with pytest.raises(RemoteError, match=r"Nothing\.reply must return a Msg, but it returned NoneType None"):
        Nothing("n", to_dist=where)(None).result(timeout=10)
    with pytest.raises(TypeError, match=r"Stringy\.reply must return a Msg"):
        Stringy("local")(Msg("u", "q"))  # the same rule for a local agent
    assert WebAgent("w", to_dist=where)(Msg("u", "q")).content == "ok"
    assert Stringy._mesh_methods["reply"] == mesh.AgentBase._mesh_methods["reply"]  # still async
