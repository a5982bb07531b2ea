"""A method name seen once is found on ``RpcObject``'s class next time (mesh.client._proxy._Named):
what a proxy gives for each name stays what ``__getattr__`` gives (methods, remote attributes,
private names, a name one class has as a method and another as an attribute, a missing one)."""

from __future__ import annotations

import pytest

import mesh
from mesh import RpcMeta, async_func
from mesh.client import _proxy
from mesh.client._proxy import RpcObject


class Named1(metaclass=RpcMeta):
    def shared_name(self) -> str:
        return "method"

    @async_func
    def later(self, x: int) -> int:
        return x + 1


class Named2(metaclass=RpcMeta):
    def __init__(self) -> None:
        self.shared_name = "attribute"


@pytest.fixture
def where():
    srv = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=False)
    try:
        yield {"host": srv.host, "port": srv.port}
    finally:
        srv.shutdown()


def test_a_name_on_the_class_gives_what_getattr_gives(where) -> None:
    one, two = Named1(to_dist=where), Named2(to_dist=where)
    assert one.shared_name() == "method"  # (first look-up: __getattr__, which puts the name on the class;
    assert two.shared_name == "attribute"  # while a creation may be unanswered, a CreatingObject's __getattr__)
    assert type(one) is RpcObject and type(two) is RpcObject  # (created: plain proxies now)
    assert isinstance(RpcObject.__dict__.get("shared_name"), _proxy._Named)
    assert one.shared_name() == "method"  # (found on the class)
    assert two.shared_name == "attribute"  # not a method of Named2: still the remote attribute
    assert [one.later(i).result() for i in range(3)] == [1, 2, 3]
    assert one.later.remote(5).result() == 6
    assert "later" in _proxy._named
    with pytest.raises(mesh.RemoteAttributeError):
        one.nope
    with pytest.raises(AttributeError, match="private"):
        one._secret
    assert one.to_dist() is one  # the proxy's own names are never shadowed
    assert "to_dist" not in _proxy._named
    assert isinstance(RpcObject.shared_name, _proxy._Named)  # (on the class itself: the descriptor)


def test_a_missing_attribute_is_asked_for_once(where, monkeypatch: pytest.MonkeyPatch) -> None:
    one, two = Named1(to_dist=where), Named2(to_dist=where)
    one.shared_name()
    asked: list = []
    send = RpcObject._mesh_send

    def counted(self, header, value):
        asked.append(header.get("m"))
        return send(self, header, value)

    monkeypatch.setattr(RpcObject, "_mesh_send", counted)
    assert two.shared_name == "attribute"
    with pytest.raises(mesh.RemoteAttributeError):
        two.later  # a method of Named1, nothing of Named2's
    assert asked == ["shared_name", "later"]  # one request each (the class's name does not ask twice)
