"""Streams with cancellation and deadlines: stopping a stream stops what its generator started,
a deadline closes a generator, and the generic cancel op stops a stream too."""

from __future__ import annotations

import asyncio
import threading

import pytest

import mesh
from tests.conftest import wait_until

_EVENTS: dict[str, threading.Event] = {}


def _event(name: str) -> threading.Event:
    return _EVENTS.setdefault(name, threading.Event())


class Sleeper(metaclass=mesh.RpcMeta):
    async def nap(self, key: str) -> None:
        _event(key + ":started").set()
        try:
            await asyncio.sleep(60)
        finally:
            _event(key + ":finally").set()


class Teller(metaclass=mesh.RpcMeta):
    def __init__(self, helper=None) -> None:
        self.helper = helper

    @mesh.stream_func
    def tell(self, key: str):
        try:
            yield 1
            if self.helper is not None:
                self.helper.nap.remote(key)  # a call this stream's generator started
            while True:
                yield 2
                mesh.check_cancelled()
                _event(key + ":tick").wait(0.02)
        finally:
            _event(key + ":closed").set()


@pytest.fixture
def two_servers():
    servers = [mesh.AgentServer(advertise=False, capacity=4).launch(in_subprocess=False) for _ in range(2)]
    try:
        yield servers
    finally:
        mesh.shutdown()
        for s in servers:
            s.shutdown()


def _on(srv):
    return {"host": srv.host, "port": srv.port}


def test_stopping_a_stream_cancels_the_calls_its_generator_made(two_servers):
    a, b = two_servers
    helper = Sleeper(to_dist=_on(b))
    teller = Teller(helper, to_dist=_on(a))
    stream = teller.tell("s1")
    assert next(iter(stream)) == 1
    assert _event("s1:started").wait(20)
    assert stream.cancel() is True
    assert _event("s1:closed").wait(20)  # the generator's finally ran
    assert _event("s1:finally").wait(20)  # and the coroutine it started, one server further, was cancelled
    with pytest.raises(mesh.Cancelled):
        stream.result(timeout=20)


def test_a_deadline_closes_a_streams_generator(two_servers):
    a, _ = two_servers
    teller = Teller(to_dist=_on(a))
    with mesh.deadline(0.5):
        stream = teller.tell("s2")
    with pytest.raises((mesh.DeadlineExceeded, mesh.Cancelled)):
        stream.result(timeout=20)
    assert _event("s2:closed").wait(20)


def test_the_cancel_op_of_a_streams_task_closes_its_generator(two_servers):
    a, _ = two_servers
    teller = Teller(to_dist=_on(a))
    stream = teller.tell("s3")
    assert next(iter(stream)) == 1
    from mesh.client._cancel import cancel_future  # the generic cancel (op cancel), not the stream's own stop

    assert cancel_future(stream) is True
    wait_until(lambda: _event("s3:closed").is_set(), timeout=20)
