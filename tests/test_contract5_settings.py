"""Acceptance tests of API.md, fifth pass: ``mesh.init(**settings)`` refuses a value of the wrong type
or range at once, naming the setting (it used to accept ``call_timeout="x"`` and fail at a later call),
and accepts AgentScope's own arguments."""

from __future__ import annotations

import pytest

import mesh

BAD = [
    ("call_timeout", "x", TypeError), ("call_timeout", -1, ValueError), ("call_timeout", 0, ValueError),
    ("connect_timeout", "soon", TypeError), ("connect_timeout", 0, ValueError),
    ("heartbeat_timeout", None, TypeError), ("heartbeat_timeout", -3, ValueError),
    ("discovery_wait", -1, ValueError), ("discovery", "no", TypeError), ("secret", 1234, TypeError),
    ("child_capacity", 0, ValueError), ("child_capacity", "8", TypeError), ("max_inflight", -1, ValueError),
]


@pytest.mark.parametrize("name,value,error", BAD, ids=[f"{n}={v!r}" for n, v, _ in BAD])
def test_a_bad_setting_is_refused_at_init_naming_it(name, value, error):
    from mesh._core import settings

    before = settings.current()
    with pytest.raises(error) as info:
        mesh.init(**{name: value})
    assert name in str(info.value)
    assert settings.current() == before  # nothing changed


def test_good_settings_and_agentscope_arguments_are_accepted(server):
    class Echo(metaclass=mesh.RpcMeta):
        def echo(self, x):
            return x

    mesh.init(call_timeout=5, connect_timeout=2.5, heartbeat_timeout=3, discovery=False, discovery_wait=0,
              secret=None, child_capacity=4, max_inflight=0)
    mesh.init(model_configs=[{"config_name": "m"}], project="p", name="run", save_api_invoke=False)
    mesh.init(call_timeout=None)
    assert Echo(to_dist={"host": server.host, "port": server.port}).echo(3) == 3
    with pytest.raises(TypeError, match="colour"):
        mesh.init(colour="blue")
