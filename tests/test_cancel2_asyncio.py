"""asyncio and cancellation: cancelling the task that awaits a mesh future cancels the remote call
(the process that made it only; ``asyncio.shield`` keeps it), and Ctrl-C inside
``asyncio.run(main())`` cancels what the process started, whether or not it was awaiting."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid

import pytest

import mesh
from cancel_agents import Worker
from conftest import read_line, wait_until
from mesh import RpcMeta, stream_func

TESTS = __file__.rsplit("/", 1)[0]


def on(srv) -> dict:
    return {"host": srv.host, "port": srv.port}


def status(srv) -> dict:
    client = mesh.client._client.get_client()
    fut = client.request(srv.address, {"op": "status"}, None, timeout=5)
    return mesh.client._replies.decode_reply(fut.result(10), srv.address)


class Borrower(metaclass=RpcMeta):
    async def wait_briefly(self, fut) -> str:
        """Awaits a future it was given, giving up after a moment (its await is cancelled)."""
        try:
            return await asyncio.wait_for(fut, 0.2)
        except asyncio.TimeoutError:
            return "gave up"


class Teller(metaclass=RpcMeta):
    def __init__(self) -> None:
        self.closed = 0

    @stream_func
    async def tell(self):
        try:
            i = 0
            while True:
                yield i
                i += 1
                await asyncio.sleep(0.01)
        finally:
            self.closed += 1


def test_cancelling_the_awaiting_task_cancels_the_remote_coroutine(server):
    w = Worker(to_dist=on(server))

    async def main():
        task = asyncio.ensure_future(_await(w.nap(30)))
        await asyncio.sleep(0)
        wait_until(lambda: "nap-start" in w.log, timeout=10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    wait_until(lambda: "nap-cancelled" in w.log, timeout=10)


async def _await(fut):
    return await fut


def test_wait_for_timeout_cancels_the_remote_call_and_shield_keeps_it(server):
    w = Worker(to_dist=on(server))

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(_await(w.nap(30, "timed")), 0.3)
        kept = w.nap(0.5, "shielded")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(_await(kept)), 0.1)
        return await kept

    assert asyncio.run(main()) == "napped"
    wait_until(lambda: "timed-cancelled" in w.log, timeout=10)
    assert "shielded-cancelled" not in w.log and "shielded-finally" in w.log


def test_a_borrowed_future_whose_await_is_cancelled_keeps_running(server):
    w = Worker(to_dist=on(server))
    borrower = Borrower(to_dist=on(server))
    fut = w.nap(1.0, "lent")
    assert borrower.wait_briefly(fut).result(timeout=20) == "gave up"
    assert fut.result(timeout=20) == "napped"  # the borrower's cancelled await left it alone
    assert "lent-cancelled" not in w.log


def test_cancelling_the_task_of_an_async_for_closes_the_generator(server):
    teller = Teller(to_dist=on(server))
    stream = teller.tell()

    async def main():
        seen = []

        async def read():
            async for item in stream:
                seen.append(item)

        task = asyncio.ensure_future(read())
        while len(seen) < 3:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(main(), 20))
    wait_until(lambda: teller.closed == 1, timeout=10)
    with pytest.raises(mesh.Cancelled):
        stream.result(timeout=10)


# -- Ctrl-C under asyncio.run(): subprocess clients --------------------------------------------------
_AWAITING = """
import sys, asyncio
sys.path.insert(0, {tests!r})
import mesh
from cancel_agents import Worker
async def main():
    ws = [Worker(to_dist={conf}) for i in range(5)]
    futs = [w.{method}(60) for w in ws]
    print("ready", flush=True)
    {wait}
try:
    asyncio.run(main())
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.stdin.readline()  # alive until the test lets it go: the cancels are not the exit's
    raise
"""


def _client(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for f in (proc.stdin, proc.stdout, proc.stderr):
        f.close()


@pytest.mark.parametrize("method", ["nap", "spin"])
@pytest.mark.parametrize("wait", ["await asyncio.gather(*futs)", "await futs[0]", "await asyncio.sleep(60)"])
def test_ctrl_c_in_asyncio_run_cancels_what_the_client_started(spawn_server, method, wait):
    srv = spawn_server()
    # detached objects: the client's exit does not delete them, so only the Ctrl-C cancel stops their calls
    conf = '{"host": %r, "port": %d, "name": "w%%d-%s" %% i, "detached": True}' % (srv.host, srv.port, uuid.uuid4().hex[:6])
    proc = _client(_AWAITING.format(tests=TESTS, conf=conf, method=method, wait=wait))
    try:
        assert read_line(proc.stdout).strip() == "ready"
        key = "running" if method == "spin" else "aio_running"
        wait_until(lambda: status(srv)[key] == 5, timeout=20)
        proc.send_signal(signal.SIGINT)
        if wait.startswith("await asyncio.sleep"):  # no mesh future awaited: the exit's hook cancels them
            proc.stdin.close()
        else:  # the interrupted awaits cancelled them, the client still lives
            assert read_line(proc.stdout).strip() == "interrupted"
        wait_until(lambda: status(srv)[key] == 0, timeout=10)
        if not proc.stdin.closed:
            proc.stdin.close()
        proc.wait(20)
        assert proc.returncode != 0
    finally:
        _end(proc)


_CHILD = """
import sys, asyncio
sys.path.insert(0, {tests!r})
import mesh
from cancel_agents import Worker
async def main():
    ws = [Worker(to_dist=True) for _ in range(5)]
    futs = [w.{method}(60) for w in ws]
    await asyncio.sleep(0.5)
    print("ready", flush=True)
    await asyncio.gather(*futs)
asyncio.run(main())
"""


@pytest.mark.parametrize("method", ["nap", "stubborn"])
def test_ctrl_c_in_asyncio_run_with_a_child_server_exits_fast(method):
    proc = _client(_CHILD.format(tests=TESTS, method=method))
    try:
        assert read_line(proc.stdout).strip() == "ready"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        took = time.monotonic() - t0
        assert proc.returncode != 0
        assert "KeyboardInterrupt" in proc.stderr.read()
        # the child server's grace (5 s) is not waited for; the figure (< 1 s) is in NOTES-streams2
        assert took < 4.5
    finally:
        _end(proc)
