"""Acceptance tests of API.md, sixth pass: futures and proxies used as values, as docs/guide.md
("Writing agents", "Failures") promises: an ``AsyncResult`` of a scalar in every kind of arithmetic,
an ``AsyncResult`` of an object, a ``Placeholder``'s every field, a proxy's public attributes."""

from __future__ import annotations

import dataclasses
import math
import operator
import time

import pytest

import mesh


@dataclasses.dataclass
class Point:
    x: int
    y: int

    def total(self) -> int:
        return self.x + self.y


class Calc(metaclass=mesh.RpcMeta):
    LIMIT = 42  # a class attribute

    def __init__(self) -> None:
        self.v = 5

    @property
    def double(self) -> int:
        return self.v * 2

    @mesh.async_func
    def val(self, v, pause=0.0):
        time.sleep(pause)
        return v

    @mesh.async_func
    def point(self):
        return Point(1, 2)


class Speaker(mesh.AgentBase):
    def reply(self, x=None):
        return mesh.Msg(
            self.name, f"re:{x.content}", role="assistant", url="http://u/1", metadata={"m": 1}, mood="calm"
        )


class Echo(mesh.AgentBase):
    def reply(self, x=None):
        return mesh.Msg(self.name, x.content)


@pytest.fixture(scope="module")
def srv():
    server = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=False)
    try:
        yield server
    finally:
        server.shutdown()


@pytest.fixture
def calc(srv):
    return Calc(to_dist={"host": srv.host, "port": srv.port})


# docs/guide.md, "Writing agents": "An AsyncResult of a scalar acts as its value in comparisons,
# arithmetic, str(), int(), float() and formatting (each waits for it)"
op_ = operator
BINARY = [
    op_.add,
    op_.sub,
    op_.mul,
    op_.truediv,
    op_.floordiv,
    op_.mod,
    op_.pow,
    op_.and_,
    op_.or_,
    op_.xor,
    op_.lshift,
    op_.rshift,
    divmod,
]
UNARY = [
    op_.neg,
    op_.pos,
    abs,
    op_.invert,
    round,
    math.trunc,
    math.floor,
    math.ceil,
    int,
    float,
    complex,
    bool,
    str,
    op_.index,
]


@pytest.mark.parametrize("op", BINARY, ids=lambda op: op.__name__)
def test_an_async_result_of_a_number_takes_every_binary_operator_both_ways(calc, op):
    assert op(calc.val(13), 3) == op(13, 3)
    assert op(3, calc.val(13)) == op(3, 13)
    assert op(calc.val(13), calc.val(3)) == op(13, 3)


@pytest.mark.parametrize("op", UNARY, ids=lambda op: op.__name__)
def test_an_async_result_of_a_number_takes_every_unary_operator(calc, op):
    assert op(calc.val(7)) == op(7)


def test_an_async_result_of_a_number_rounds_and_formats_as_its_value(calc):
    assert round(calc.val(2.567), 1) == 2.6
    assert f"{calc.val(3.14159):.2f}" == "3.14" and "%d" % calc.val(7) == "7"
    assert [0, 1, 2, 3][calc.val(2)] == 2 and list(range(calc.val(3))) == [0, 1, 2]
    assert sum([calc.val(1), calc.val(2)]) == 3
    assert calc.val("ab") + "c" == "abc" and "x" + calc.val("y") == "xy"


def test_an_async_result_has_a_repr_that_never_waits_and_hashes_as_itself(calc):
    fut = calc.val(1, pause=1.0)
    t0 = time.monotonic()
    text = repr(fut)
    key = {fut: "mine"}
    assert time.monotonic() - t0 < 0.5, "repr or hash waited for the value"
    assert "AsyncResult" in text and not fut.done()
    assert key[fut] == "mine" and fut.result(timeout=10) == 1
    assert hash(fut) == hash(fut) and key[fut] == "mine"  # the hash did not change with the value


def test_an_async_result_of_an_object_gives_its_public_attributes_and_methods(calc):
    fut = calc.point()
    assert fut.x == 1 and fut.total() == 3
    assert fut.result(timeout=10) == Point(1, 2)


def test_reading_public_attributes_of_a_proxy_returns_the_remote_values(calc):
    assert calc.v == 5 and calc.LIMIT == 42 and calc.double == 10
    with pytest.raises(mesh.RemoteAttributeError) as info:  # guide.md, "Failures": also an AttributeError
        calc.missing  # noqa: B018
    assert isinstance(info.value, AttributeError) and isinstance(info.value, mesh.RemoteError)
    assert "missing" in str(info.value)
    assert hasattr(calc, "v") and not hasattr(calc, "missing")


def test_every_field_of_a_placeholder_is_its_messages(srv):
    on = {"host": srv.host, "port": srv.port}
    p = Speaker("sp", to_dist=on)(mesh.Msg("user", "q"))
    assert isinstance(p, mesh.Placeholder) and isinstance(p, mesh.Msg)
    msg = p.result(timeout=10)
    assert type(msg) is not mesh.Placeholder and isinstance(msg, mesh.Msg)
    assert (p.id, p.timestamp) == (msg.id, msg.timestamp)
    assert (p.name, p.content, p.role, p.url, p.metadata) == ("sp", "re:q", "assistant", "http://u/1", {"m": 1})
    assert p.mood == "calm" == msg.mood  # an extra field
    assert p == msg and msg == p
    assert p.to_dict() == msg.to_dict() and mesh.Msg.from_dict(p.to_dict()) == msg


def test_setting_a_field_of_a_placeholder_changes_the_message_it_passes_on(srv):
    # guide.md, "Writing agents": "setting a field (x.content = ...) waits for the message and
    # changes it; passing x on afterwards sends the changed message by value"
    on = {"host": srv.host, "port": srv.port}
    p = Speaker("sp2", to_dist=on)(mesh.Msg("user", "q"))
    p.content = "edited"
    assert p.content == "edited" and p.result(timeout=10).content == "edited"
    assert Echo("echo", to_dist=on)(p).content == "edited"
