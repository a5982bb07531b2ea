"""The raw pyzmq baseline: a tiny DEALER/ROUTER + msgpack RPC server and its client.

The benchmarks compare the mesh against this, measured in the same run with the
same process layout (the server in another process, started with
``subprocess`` + ``sys.executable``).

    python benchmarks/_raw.py serve      # prints "port N", serves until stdin closes

Wire: ``[header, *frames]`` where header is msgpack ``[rid, op, arg]``; the reply
is ``[msgpack [rid, result], *frames]``. Ops:

* ``echo`` arg -> arg
* ``len`` -> length of the first extra frame, read as ``bytes`` (as a method taking ``bytes`` gets it)
* ``produce`` (key, n) -> stores ``b"\\x01" * n`` under key (as the mesh Producer does)
* ``get`` key -> the stored bytes as an extra frame (waits until produced; pops it)
* ``consume`` (address, key) -> fetches key from another raw server at address, returns the length
  of the value read as ``bytes`` (as a method taking ``bytes`` gets it)
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import msgpack
import zmq

from _common import exit_with_parent

_packb = msgpack.packb
_unpackb = msgpack.unpackb


# ------------------------------------------------------------------- server
def serve() -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    sock.sndhwm = 0
    sock.rcvhwm = 0
    port = sock.bind_to_random_port("tcp://127.0.0.1", min_port=20000, max_port=60000)
    store: dict[Any, bytes] = {}
    waiting: dict[Any, list[tuple[bytes, int]]] = {}
    dealers: dict[str, zmq.Socket] = {}

    exit_with_parent()
    print(f"port {port} pid {os.getpid()}", flush=True)

    recv = sock.recv
    send = sock.send
    send_multipart = sock.send_multipart
    getsockopt = sock.getsockopt
    RCVMORE = zmq.RCVMORE
    SNDMORE = zmq.SNDMORE
    while True:
        ident = recv()
        raw = recv()
        extra = []
        while getsockopt(RCVMORE):
            extra.append(recv(copy=False))
        rid, op, arg = _unpackb(raw)
        if op == "echo":
            send_multipart([ident, _packb([rid, arg])])
        elif op == "len":
            send_multipart([ident, _packb([rid, len(extra[0].bytes)])])
        elif op == "produce":
            key, n = arg
            value = b"\x01" * n
            waiters = waiting.pop(key, None)
            if waiters:
                who, wrid = waiters[0]
                send(who, SNDMORE)
                send(_packb([wrid, None]), SNDMORE)
                send(value, copy=False)
            else:
                store[key] = value
            send_multipart([ident, _packb([rid, None])])
        elif op == "get":
            value = store.pop(arg, None)
            if value is None:
                waiting.setdefault(arg, []).append((ident, rid))
            else:
                send(ident, SNDMORE)
                send(_packb([rid, None]), SNDMORE)
                send(value, copy=False)
        elif op == "consume":
            address, key = arg
            d = dealers.get(address)
            if d is None:
                d = dealers[address] = ctx.socket(zmq.DEALER)
                d.linger = 0
                d.connect(address)
            d.send(_packb([0, "get", key]))
            frames = d.recv_multipart(copy=False)
            send_multipart([ident, _packb([rid, len(frames[1].bytes)])])
        else:
            send_multipart([ident, _packb([rid, f"unknown op {op}"])])


# ------------------------------------------------------------------- client
class RawServer:
    """A raw server in a subprocess of this one."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("port "):
            self.stop()
            raise RuntimeError(f"raw server did not start: {line!r}")
        self.port = int(line.split()[1])
        self.address = f"tcp://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> RawServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class RawClient:
    """A DEALER connected to one raw server."""

    def __init__(self, address: str, ctx: zmq.Context | None = None) -> None:
        self.ctx = ctx or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.sndhwm = 0
        self.sock.rcvhwm = 0
        self.sock.connect(address)
        self.rid = 0

    def call(self, op: str, arg: Any = None, *frames: Any) -> tuple[Any, list]:
        self.rid += 1
        rid = self.rid
        if frames:
            self.sock.send(_packb([rid, op, arg]), zmq.SNDMORE)
            last = len(frames) - 1
            for i, f in enumerate(frames):
                self.sock.send(f, zmq.SNDMORE if i < last else 0, copy=False)
        else:
            self.sock.send(_packb([rid, op, arg]))
        reply = self.sock.recv_multipart(copy=False)
        got, result = _unpackb(reply[0].bytes)
        assert got == rid, (got, rid)
        return result, reply[1:]

    def echo(self, arg: Any) -> Any:
        self.rid += 1
        rid = self.rid
        self.sock.send(_packb([rid, "echo", arg]))
        got, result = _unpackb(self.sock.recv())
        assert got == rid
        return result

    def pipelined(self, n: int) -> list:
        """Send n echo requests, then receive the n replies."""
        send = self.sock.send
        recv = self.sock.recv
        base = self.rid
        for i in range(n):
            send(_packb([base + i + 1, "echo", i]))
        out = [_unpackb(recv())[1] for _ in range(n)]
        self.rid = base + n
        return out

    def close(self) -> None:
        self.sock.close(0)


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        serve()
    else:
        sys.exit("usage: _raw.py serve")
