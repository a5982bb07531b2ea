"""Fuzz: whatever bytes an HTTP client posts, the edge answers (never 5xx) and keeps serving;
whatever a peer's status reply holds, ``top`` summarizes it or says it is malformed."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mesh
from mesh import _top

pytest.importorskip("a2a")


class Quiet(mesh.AgentBase):
    def reply(self, x=None):
        return mesh.Msg(self.name, "ok")


@pytest.fixture(scope="module")
def edge_url():
    srv = mesh.AgentServer(http_port=0, http_max_body=2048, advertise=False).launch(in_subprocess=False)
    # detached: the module's tests share it, and each test's clean-up ends the session that made it
    Quiet(name="q", to_dist={"host": srv.host, "port": srv.port, "detached": True})
    try:
        yield srv.http_url
    finally:
        srv.shutdown()
        mesh.shutdown()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.binary(max_size=3000) | json_values.map(lambda v: httpx.Request("POST", "/", json=v).content))
def test_any_body_gets_an_answer(edge_url, body):
    r = httpx.post(edge_url + "/a2a/q/", content=body, timeout=20)
    assert r.status_code in (200, 400, 404, 413, 415, 422), r.text[:200]


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(params=json_values, method=st.sampled_from(["message/send", "SendMessage", "tasks/get", "message/stream"]))
def test_any_params_get_an_answer(edge_url, params, method):
    if method:
        r = httpx.post(edge_url + "/a2a/q/", json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
                       timeout=20)
        assert r.status_code == 200


@settings(max_examples=200, deadline=None)
@given(cur=st.dictionaries(st.sampled_from(["calls", "agents", "name", "load", "queued", "rss", "x"]), json_values),
       prev=st.none() | st.dictionaries(st.sampled_from(["calls", "agents"]), json_values))
def test_top_summarizes_any_status(cur, prev):
    view = _top.summarize({"address": "tcp://h:1", **cur}, prev, 1.0)
    assert view["ok"] in (True, False)
    _top.render([view])
