"""Acceptance tests (second pass): remote exceptions keep their class (API.md "asyncio", last point),
and ``mesh.wait`` behaves like ``ray.wait`` at its edges."""

from __future__ import annotations

import asyncio
import json
import pickle
import subprocess
import traceback

import pytest

import mesh


class TwoArgs(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a}-{b}")


class KwOnly(Exception):
    def __init__(self, *, code):
        super().__init__(code)


class Thrower(metaclass=mesh.RpcMeta):
    def throw(self, kind):
        if kind == "json":
            json.loads("{")
        if kind == "unicode":
            b"\xff".decode("utf-8")
        if kind == "process":
            raise subprocess.CalledProcessError(3, ["ls"])
        if kind == "two":
            raise TwoArgs(1, 2)
        if kind == "kw":
            raise KwOnly(code=5)
        if kind == "exit":
            raise SystemExit(3)
        return "no"

    async def athrow(self, kind):
        await asyncio.sleep(0)
        return self.throw(kind)


def on(srv):
    return {"host": srv.host, "port": srv.port}


@pytest.mark.parametrize("kind, cls", [
    ("json", ValueError),  # json.JSONDecodeError(msg, doc, pos) is a ValueError
    ("json", json.JSONDecodeError),
    ("unicode", UnicodeDecodeError),
    ("unicode", ValueError),
    ("process", subprocess.CalledProcessError),
    ("two", TwoArgs),
    ("kw", KwOnly),
])
def test_importable_exception_classes_with_any_constructor_are_caught_by_their_class(server, kind, cls):
    t = Thrower(to_dist=on(server))
    with pytest.raises(cls) as ei:
        t.throw(kind)
    err = ei.value
    assert isinstance(err, mesh.RemoteError) and err.remote_type
    assert err.remote_traceback and "throw" in err.remote_traceback
    # it prints, reprs and pickles like any exception
    assert err.remote_type in str(err)
    repr(err)
    "".join(traceback.format_exception(err))
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, cls) and isinstance(back, mesh.RemoteError)
    # and the same from a coroutine method, awaited
    with pytest.raises(cls):
        asyncio.run(asyncio.wait_for(_await(t.athrow(kind)), 10))


async def _await(f):
    return await f


def test_remote_system_exit_is_a_plain_remote_error_and_the_server_lives(server):
    t = Thrower(to_dist=on(server))
    with pytest.raises(mesh.RemoteError) as ei:
        t.throw("exit")
    assert not isinstance(ei.value, SystemExit)
    assert ei.value.remote_type == "SystemExit"
    assert t.throw("none") == "no"


def test_wait_edges_like_ray_wait(server):
    assert mesh.wait([]) == ([], [])
    assert mesh.wait([], num_returns=0, timeout=0) == ([], [])
    t = Thrower(to_dist=on(server))
    f = t.throw.remote("none")
    with pytest.raises(ValueError):
        mesh.wait([f], num_returns=2)
    done, pending = mesh.wait([f], num_returns=0)
    assert done == [] and pending == [f]
    assert list(mesh.as_completed([])) == []
