"""Acceptance tests of API.md, fifth pass: ``MessageTooLarge`` for a server whose ``max_message_size``
is under 64 KiB (the size below which the client's fast lanes used to send without checking).

API.md, Errors: ``MessageTooLarge`` is the error of a request bigger than the server's limit
(``--max-message-size`` / ``max_message_size``); "Neither ever hangs" holds for futures. A request of
10-60 KiB to a server with a 10 kB limit used to be dropped by the server's socket (ZeroMQ's
``MAXMSGSIZE`` closes the connection): the caller got ``OutcomeUnknown`` (a sync call) or waited
for its whole timeout (an async call), and never ``MessageTooLarge``."""

from __future__ import annotations

import asyncio

import pytest

import mesh

LIMIT = 10_000


class Sizer(metaclass=mesh.RpcMeta):
    def __init__(self, blob=b""):
        self.first = len(blob)

    def size(self, x):
        return len(x)

    async def asize(self, x):
        return len(x)

    @mesh.stream_func
    def sizes(self, x):
        yield len(x)


@pytest.fixture
def small():
    srv = mesh.AgentServer(port=0, advertise=False, max_message_size=LIMIT).launch(in_subprocess=False)
    try:
        yield srv, Sizer(to_dist={"host": srv.host, "port": srv.port})
    finally:
        srv.shutdown()


SIZES = [LIMIT + 100, 3 * LIMIT, 60_000]  # over the limit, all under 64 KiB


@pytest.mark.parametrize("n", SIZES)
def test_a_sync_call_over_a_small_limit_is_message_too_large_and_the_object_serves_on(small, n):
    srv, s = small
    with pytest.raises(mesh.MessageTooLarge) as info:
        s.size("x" * n)
    assert str(LIMIT) in str(info.value) and srv.address in str(info.value)  # it says which limit, where
    assert s.size("x" * (LIMIT // 2)) == LIMIT // 2  # under the limit: served, the connection is fine


def test_a_stream_call_and_a_creation_over_a_small_limit_are_message_too_large(small):
    srv, s = small
    with pytest.raises(mesh.MessageTooLarge):
        s.sizes("x" * (3 * LIMIT)).result(timeout=10)
    with pytest.raises(mesh.MessageTooLarge):  # the limit is known now (from the first creation)
        Sizer(b"x" * (3 * LIMIT), to_dist={"host": srv.host, "port": srv.port}).size("ok")
    assert s.sizes("abc").result(timeout=10) == [3]


@pytest.mark.parametrize("how", ["remote", "coroutine", "await"])
def test_an_async_call_over_a_small_limit_is_message_too_large_at_once(small, how):
    _, s = small
    x = "x" * (3 * LIMIT)
    with pytest.raises(mesh.MessageTooLarge):
        if how == "remote":
            s.size.remote(x).result(timeout=3)
        elif how == "coroutine":
            s.asize(x).result(timeout=3)
        else:
            asyncio.run(asyncio.wait_for(s.asize.remote(x), 3))
    assert s.size.remote("abc").result(timeout=10) == 3
