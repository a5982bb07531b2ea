"""Edge-triggered sockets of the I/O loop (NOTES-loop6): a monitor is polled through an epoll set of
ZMQ_FDs, not by zmq_poll, and loses no event: not those queued before it was added, not those a
handler left unread, not those after a remove and re-add; MESH_LOOP_EPOLL=0 polls it as before."""

from __future__ import annotations

import threading

import pytest
import zmq

import transport._edge as edge_mod
from tests.conftest import wait_until
from transport._edge import edge_triggered
from transport._loop import Call, Loop
from transport._sockets import monitor_events, parse_monitor_message


@pytest.fixture(params=[True, False], ids=["epoll", "zmq_poll"])
def loop(request, monkeypatch):
    monkeypatch.setattr(edge_mod, "_EDGE_ON", request.param)
    lp = Loop(teardown=lambda: lp.abort_queued(RuntimeError("stopped")), name="edge-test")
    lp.start()
    request.addfinalizer(lambda: (lp.stop(), lp.thread.join(5)))
    return lp


@pytest.fixture
def ctx():
    c = zmq.Context()
    try:
        yield c
    finally:
        c.destroy(linger=0)  # (closes what a failed test left open)


def _on_loop(loop: Loop, fn, *args):
    """Run ``fn(*args)`` on the loop's thread and return its result."""
    out: list = []
    done = threading.Event()
    loop.submit(Call(lambda: (out.append(fn(*args)), done.set())))
    assert done.wait(5)
    return out[0]


def _monitored(ctx: zmq.Context):
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    mon = edge_triggered(dealer.get_monitor_socket())
    return router, dealer, mon, f"tcp://127.0.0.1:{port}"


def test_a_monitor_gets_every_event_one_read_per_handler_call(loop: Loop, ctx: zmq.Context) -> None:
    router, dealer, mon, endpoint = _monitored(ctx)
    dealer.connect(endpoint)  # events queue up before the loop watches the monitor
    seen: list[int] = []

    def one(_mask: int) -> None:  # reads one event per call: the rest must still come
        try:
            seen.append(parse_monitor_message(mon.recv_multipart(zmq.NOBLOCK))["event"])
        except zmq.Again:
            pass

    _on_loop(loop, loop.add, mon, one)
    assert _on_loop(loop, lambda: any(s is mon for s, _ in loop._poller.sockets)) is (loop._edge is None)
    wait_until(lambda: zmq.EVENT_HANDSHAKE_SUCCEEDED in seen, timeout=10)
    router.close(0)  # the peer goes: a new event after the monitor was drained
    wait_until(lambda: zmq.EVENT_DISCONNECTED in seen, timeout=10)
    _on_loop(loop, loop.remove, mon)
    _on_loop(loop, lambda: (dealer.close(0), mon.close(0)))


def test_a_removed_monitor_is_not_run_and_a_re_added_one_reads_what_waits(loop: Loop, ctx: zmq.Context) -> None:
    router, dealer, mon, endpoint = _monitored(ctx)
    seen: list[int] = []

    def drain(_mask: int) -> None:
        seen.extend(m["event"] for m in monitor_events(mon))

    _on_loop(loop, loop.add, mon, drain)
    _on_loop(loop, loop.remove, mon)
    dealer.connect(endpoint)
    # (not synchronisation: the events come while nothing watches the monitor; a turn runs first)
    assert _on_loop(loop, lambda: mon.poll(5000))
    assert not seen
    _on_loop(loop, loop.add, mon, drain)
    wait_until(lambda: zmq.EVENT_HANDSHAKE_SUCCEEDED in seen, timeout=10)
    _on_loop(loop, loop.remove, mon)
    _on_loop(loop, lambda: (dealer.close(0), mon.close(0), router.close(0)))
