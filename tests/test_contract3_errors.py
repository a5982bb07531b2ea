"""Acceptance tests of API.md, third pass: a remote exception's class "when that class can be imported by the
caller" — also when the caller has not imported it yet."""

from __future__ import annotations

import os
import sys

import pytest

import mesh

TESTS = os.path.dirname(os.path.abspath(__file__))


class Parser(metaclass=mesh.RpcMeta):
    def parse(self, path):
        import sys as _sys

        if path not in _sys.path:
            _sys.path.insert(0, path)
        import contract3_errmod

        raise contract3_errmod.ParseFailure("bad input at 3")


def test_remote_exception_of_a_module_the_caller_can_import_but_has_not(spawn_server):
    sys.modules.pop("contract3_errmod", None)  # importable (tests/ is on sys.path), not imported
    assert TESTS in sys.path
    srv = spawn_server(port=0)
    p = Parser(to_dist={"host": srv.host, "port": srv.port})
    with pytest.raises(ValueError) as ei:  # except ValueError catches it, as for a builtin ValueError
        p.parse(TESTS)
    assert isinstance(ei.value, mesh.RemoteError)
    assert type(ei.value).__mro__[1].__name__ == "ParseFailure" or "ParseFailure" in ei.value.remote_type


def test_remote_exception_of_an_imported_module_keeps_its_class(spawn_server):
    import contract3_errmod

    srv = spawn_server(port=0)
    p = Parser(to_dist={"host": srv.host, "port": srv.port})
    with pytest.raises(contract3_errmod.ParseFailure) as ei:
        p.parse(TESTS)
    assert isinstance(ei.value, mesh.RemoteError) and isinstance(ei.value, ValueError)
    assert "bad input at 3" in str(ei.value)
