"""A private redis-server for tests: loopback, a free port, no persistence, stopped by its PID.

    with RedisServer() as srv:       # or srv = RedisServer().start(); ...; srv.stop()
        url = srv.url
        srv.stop(); srv.start()      # the same port again: a Redis that went away and came back
        srv.pause(); srv.resume()    # a hung Redis (SIGSTOP / SIGCONT)

Only ever started inside the tests' isolated network namespace (bin/test).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

__all__ = ["RedisServer", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """One redis-server process on ``127.0.0.1:<port>``, restartable on the same port."""

    binary = shutil.which("redis-server")

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self._dir = tempfile.mkdtemp(prefix="mesh-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start it and return once it answers PING.

        Raises:
            RuntimeError: it exited or did not answer within ``timeout`` (its log is in the message).
        """
        if not self.binary:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"redis-server already running (pid {self.proc.pid})")
        log = os.path.join(self._dir, "redis.log")
        self.proc = subprocess.Popen(
            [
                self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "yes",
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", self._dir,
                "--logfile", log, "--databases", "1",
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                code = self.proc.poll()
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not start (exit {code}):\n{self._log_tail(log)}")
            time.sleep(0.01)  # polling interval of the condition above
        return self

    def ping(self, timeout: float = 0.5) -> bool:
        """True when it answers PING now."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def pause(self) -> None:
        """Freeze it (SIGSTOP): connections are accepted by the kernel, nothing is answered."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop it by its PID: SIGTERM, wait, then SIGKILL. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGCONT)  # a paused process would not act on SIGTERM
                proc.terminate()
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            except ProcessLookupError:
                pass
        proc.wait()

    def close(self) -> None:
        """Stop it and remove its directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    @staticmethod
    def _log_tail(path: str) -> str:
        try:
            with open(path, errors="replace") as fh:
                return "".join(fh.readlines()[-20:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RedisServer {self.url} pid={self.pid}>"
