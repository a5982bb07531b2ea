"""Values of importable classes pickle with the C pickler; cloudpickle only for what goes by value.

A ``Msg``, a dataclass, an enum, a function of an importable module: the payload is what stdlib
``pickle`` makes of the value (byte for byte), and loading it never imports cloudpickle. A lambda, a
closure, a local class, a class or function of ``__main__``, of a module registered by value or of
a module not in ``sys.modules``: cloudpickle's payload, as before, and the receiving side loads the
common ones without importing cloudpickle (``transport._byvalue_load.load_value``). What cannot
travel is refused with the same errors. A server that replied with a ``Msg`` has not loaded
cloudpickle.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import threading

import cloudpickle
import msgpack
import pytest

from mesh import Msg
from msgpickle_values import Color, Point, double
from test_footprint import _imported_by_start  # the server as footprint.py starts it
from transport import _pickler
from transport._codec import BUFFER_THRESHOLD, EXT_PICKLED, CodecError, Untransferable, decode, encode

pytestmark = pytest.mark.timeout(120)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")


def payload(value):
    return _pickler.dumps(value, BUFFER_THRESHOLD)[0]


def round_trip(value):
    body, bufs = encode(value)
    return decode(body, bufs)


IMPORTABLE = {
    "Msg": Msg("user", {"q": [1, 2.5, None]}, metadata={"k": (1, 2)}),
    "dataclass": Point(1, 2),
    "enum": Color.GREEN,
    "function": double,
    "builtin": len,
    "class": Point,
    "NoneType": type(None),
    "nested": {1j: [Msg("a", Point(3)), Color.RED]},  # (a dict with a complex key is pickled whole)
    "in-memory IO": io.BytesIO(b"abc"),
}


@pytest.mark.parametrize("kind", list(IMPORTABLE))
def test_values_of_importable_classes_pickle_as_stdlib_pickle_does(kind):
    value = IMPORTABLE[kind]
    data = payload(value)
    assert data == pickle.dumps(value, protocol=5)
    assert b"cloudpickle" not in data
    back = round_trip(value)
    if kind == "in-memory IO":
        assert back.getvalue() == b"abc"
    else:
        assert back == value or back is value


def _local_class_instance():
    class Local:
        def __init__(self) -> None:
            self.v = 7

        def get(self) -> int:
            return self.v

    return Local()


def _closure(k):
    return lambda x: x + k


class Elsewhere:  # its module renamed below to one that is not loaded
    def get(self) -> int:
        return 5


def test_what_must_go_by_value_is_pickled_by_cloudpickle(monkeypatch):
    monkeypatch.setattr(Elsewhere, "__module__", "no_such_module_for_msgpickle")
    cases = {
        "lambda": (lambda x: x * 3, lambda f: f(2) == 6),
        "closure": (_closure(10), lambda f: f(1) == 11),
        "local class": (_local_class_instance(), lambda o: o.get() == 7),
        "Msg holding a lambda": (Msg("a", lambda: 4), lambda m: m.content() == 4),
        "module not loaded": (Elsewhere(), lambda o: o.get() == 5),
        "module object": (json, lambda m: m is json),
        "property (cloudpickle's reducer)": (property(len), lambda p: p.fget is len),
    }
    for kind, (value, check) in cases.items():
        assert payload(value) == cloudpickle.dumps(value, protocol=5), kind  # cloudpickle made it, as before
        assert check(round_trip(value)), kind


def test_a_module_registered_by_value_goes_by_value(tmp_path, monkeypatch):
    (tmp_path / "msgpickle_regmod.py").write_text("class Thing:\n    def get(self):\n        return 9\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "msgpickle_regmod", raising=False)
    import msgpickle_regmod

    thing = msgpickle_regmod.Thing()
    assert payload(thing) == pickle.dumps(thing, protocol=5)  # by reference
    cloudpickle.register_pickle_by_value(msgpickle_regmod)
    try:
        data = payload(thing)
        assert b"_make_skeleton_class" in data  # the class itself travels
        assert round_trip(thing).get() == 9
    finally:
        cloudpickle.unregister_pickle_by_value(msgpickle_regmod)
    assert payload(thing) == pickle.dumps(thing, protocol=5)
    # as mesh._byvalue registers it while it sends a class by value
    from mesh._byvalue import class_by_value

    with class_by_value(msgpickle_regmod.Thing):
        assert b"_make_skeleton_class" in payload(thing)
    assert b"cloudpickle" not in payload(thing)


def test_what_cannot_travel_is_refused_with_the_same_errors():
    lock = threading.Lock()
    with open(__file__) as f:
        for value, what in [
            (Msg("a", lock), "a lock"),
            (Msg("a", f), "an open file"),
            (Msg("a", (lambda: 1, lock)), "a lock"),
            (Point(f), "an open file"),
        ]:
            with pytest.raises(Untransferable) as err:
                encode(value)
            assert err.value.what == what
            assert (
                str(err.value) == f"{what} ({type(err.value.obj).__module__}.{type(err.value.obj).__qualname__}) "
                "cannot travel to another process"
            )


def test_a_payload_made_by_cloudpickle_still_loads():
    for value in (Msg("a", "b"), Point(1), _closure(2)):
        body = msgpack.packb(msgpack.ExtType(EXT_PICKLED, msgpack.packb([cloudpickle.dumps(value, protocol=5), []])))
        back = decode(body, [])
        assert back(1) == 3 if callable(back) else back == value


def test_the_types_only_cloudpickle_reduces_are_cloudpickles_own():
    table = cloudpickle.Pickler._dispatch_table
    assert {(t.__module__, t.__qualname__) for t in table if isinstance(t, type)} == _pickler._CLOUDPICKLE_TYPES


def test_a_class_that_needed_cloudpickle_tries_the_c_pickler_again_after_a_span(monkeypatch):
    monkeypatch.setattr(_pickler, "_cloudpickled", {})
    payload(Msg("a", lambda: 1))
    assert _pickler._cloudpickled == {Msg: _pickler._CLOUDPICKLE_SPAN}
    for left in range(_pickler._CLOUDPICKLE_SPAN, 1, -1):
        assert _pickler._cloudpickled[Msg] == left
        payload(Msg("a", "b"))  # straight to cloudpickle
    payload(Msg("a", "b"))
    assert Msg not in _pickler._cloudpickled  # the next one tries the C pickler again
    payload(Point(1))
    assert _pickler._cloudpickled == {}


def test_a_deep_value_is_still_refused_cleanly():
    value: list = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(CodecError, match="nested too deeply"):
        encode(Msg("a", value))


# -- across processes: the sender's __main__, a receiver that has not loaded cloudpickle --------------

_SEND = r"""
import pickle, sys
sys.path[:0] = [{root!r}, {tests!r}]
from mesh import Msg
from msgpickle_values import Color, Point, double
from transport._codec import encode

class Main:  # __main__: the C pickler would name it __main__.Main, which the receiver lacks
    def __init__(self):
        self.v = 5
    def get(self):
        return self.v

def main_function(x):
    return x - 1

def closure(k):
    return lambda x: x + k

importable = [Msg("a", {{"b": 1}}), Point(2, 3), Color.RED, double]
by_value = [Main(), main_function, closure(3), lambda x: x * 2, Msg("a", Main()), [Main(), Main()]]
far = Msg("a", ["x" * 20000, lambda x: x + 1])  # cloudpickle named past the 16 KiB the receiver scans
sys.stdout.buffer.write(pickle.dumps([[encode(v) for v in importable], [encode(v) for v in by_value], encode(far)]))
"""

_RECEIVE = r"""
import json, pickle, sys
sys.path[:0] = [{root!r}, {tests!r}]
from transport._codec import decode
importable, by_value, far = pickle.loads(sys.stdin.buffer.read())
a = [decode(b, bufs) for b, bufs in importable]
after_importable = "cloudpickle" in sys.modules
v = [decode(b, bufs) for b, bufs in by_value]
out = {{"importable": [repr(a[0]), a[1].x + a[1].y, a[2].name, a[3](4)], "after_importable": after_importable,
       "by_value": [type(v[0]).__name__, v[0].get(), v[1](5), v[2](1), v[3](4), v[4].content.get(),
                    [m.get() for m in v[5]], type(v[5][0]) is type(v[0]) is type(v[4].content)],
       "after_by_value": "cloudpickle" in sys.modules}}
out["far"] = decode(*far).content[1](1)  # loaded by cloudpickle itself
print(json.dumps(out))
"""


def test_main_values_travel_by_value_and_load_without_cloudpickle():
    env = {**os.environ, "PYTHONPATH": ""}
    sent = subprocess.run(
        [sys.executable, "-c", _SEND.format(root=ROOT, tests=TESTS)], capture_output=True, timeout=60, env=env, cwd="/"
    )
    assert sent.returncode == 0, sent.stderr.decode()
    got = subprocess.run(
        [sys.executable, "-c", _RECEIVE.format(root=ROOT, tests=TESTS)],
        input=sent.stdout,
        capture_output=True,
        timeout=60,
        env=env,
        cwd="/",
    )
    assert got.returncode == 0, got.stderr.decode()
    out = json.loads(got.stdout.decode().splitlines()[-1])
    assert out["importable"] == ["Msg(name='a', content={'b': 1}, role='assistant')", 5, "RED", 8]
    assert out["by_value"] == ["Main", 5, 4, 4, 8, 5, [5, 5], True]
    assert out["after_importable"] is False and out["after_by_value"] is False
    assert out["far"] == 2


# -- a server replying with a Msg ---------------------------------------------------------------------

_CLIENT = r"""
import sys
sys.path.insert(0, {root!r})
import mesh
from mesh import Msg

class Talker(mesh.AgentBase):  # in __main__: the server cannot import it, it travels by value
    def reply(self, x=None):
        return Msg(self.name, {{"echo": x.content if x is not None else None}}, metadata={{"n": 1}})

class Plain(metaclass=mesh.RpcMeta):
    def msg(self, m):
        return Msg("p", [m, m.content])

where = {{"host": "127.0.0.1", "port": {port}}}
t = Talker("t", to_dist=where)
assert t(Msg("u", "hi")).content == {{"echo": "hi"}}
p = Plain(to_dist=where)
out = p.msg(Msg("u", "x"))
assert out.content[1] == "x" and out.content[0].name == "u"
print("ok")
"""


def test_a_server_that_replied_with_a_msg_has_not_loaded_cloudpickle():
    def talk(port: int) -> None:
        out = subprocess.run(
            [sys.executable, "-c", _CLIENT.format(root=ROOT, port=port)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "MESH_DISCOVERY": "0"},
            cwd="/",
        )
        assert out.stdout.strip() == "ok", out.stderr

    imported = _imported_by_start(False, then=talk)
    assert "mesh._msg" in imported and "mesh.server._dispatch" in imported  # the measure works
    assert sorted(m for m in imported if m.split(".")[0] == "cloudpickle") == []
