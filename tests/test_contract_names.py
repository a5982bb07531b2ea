"""Acceptance tests of API.md: every public name is exported, documented, and errors are clear."""

from __future__ import annotations

import inspect

import pytest

import mesh

API_NAMES = [
    # first release
    "Msg", "RpcMeta", "DistConf", "sync_func", "async_func", "RpcObject", "AgentBase", "AsyncResult",
    "Placeholder", "AgentServer", "RpcAgentServerLauncher", "servers", "init", "shutdown",
    "MeshError", "RemoteError", "ServerUnavailable", "CallTimeout", "ResultExpired", "MessageTooLarge",
    "AgentNotFound", "AuthenticationError",
    # additions
    "Stream", "wait", "as_completed", "stream_func", "cancelled", "check_cancelled", "Cancelled",
    "deadline", "time_left", "DeadlineExceeded",
]


@pytest.mark.parametrize("name", API_NAMES)
def test_every_api_name_is_exported_and_documented(name):
    assert name in mesh.__all__, name
    obj = getattr(mesh, name)
    assert inspect.getdoc(obj), f"mesh.{name} has no docstring"


def test_all_holds_only_public_existing_names():
    for name in mesh.__all__:
        assert not name.startswith("_"), name
        assert hasattr(mesh, name), name
        assert inspect.getdoc(getattr(mesh, name)), f"mesh.{name} has no docstring"
    assert len(set(mesh.__all__)) == len(mesh.__all__)


def test_public_methods_documented():
    for cls in (mesh.AsyncResult, mesh.Placeholder, mesh.Stream, mesh.AgentServer, mesh.AgentBase, mesh.Msg):
        for meth in ("result", "done", "cancel", "launch", "shutdown", "wait_until_terminate", "reply",
                     "observe", "state_dict", "load_state_dict", "to_dict", "from_dict"):
            if hasattr(cls, meth):
                assert inspect.getdoc(getattr(cls, meth)), f"{cls.__name__}.{meth} has no docstring"


def test_optional_packages():
    import mesh.a2a
    import mesh.autogen

    assert inspect.getdoc(mesh.autogen) and inspect.getdoc(mesh.a2a)
    for name in ("MeshWorkerRuntimeHost", "MeshWorkerRuntime"):
        assert inspect.getdoc(getattr(mesh.autogen, name)), name


def test_help_works():
    import io
    import pydoc

    out = io.StringIO()
    pydoc.Helper(output=out).help(mesh)
    assert "AgentServer" in out.getvalue()


def test_unknown_to_dist_option_is_a_clear_error():
    class K(metaclass=mesh.RpcMeta):
        pass

    with pytest.raises(TypeError) as info:
        K(to_dist={"host": "127.0.0.1", "port": 1, "no_such_option": 1})
    assert "no_such_option" in str(info.value)


def test_bad_address_is_a_clear_error():
    class K(metaclass=mesh.RpcMeta):
        pass

    with pytest.raises((mesh.MeshError, ValueError)) as info:
        K(to_dist={"host": "127.0.0.1", "port": "not-a-port"})
    assert "not-a-port" in str(info.value)
