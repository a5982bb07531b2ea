"""Shared-secret security: who gets in, what they see, and what a server refuses."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

import mesh
from agents_lib import Store
from conftest import run_cli

MARKER = "very-secret-marker-4f1c"


class Witness(metaclass=mesh.RpcMeta):
    """Writes a file when constructed: proves whether a server ran anything."""

    def __init__(self, path: str) -> None:
        with open(path, "w") as fh:
            fh.write("ran")

    def echo(self, x):
        return x


def on(srv):
    return {"host": srv.host, "port": srv.port}


def test_right_secret_works(spawn_server):
    srv = spawn_server(port=0, secret="s1")
    mesh.init(secret="s1")
    assert Store(to_dist=on(srv)).add(2) == 2


@pytest.mark.parametrize("client_secret", ["wrong", None])
def test_wrong_or_missing_secret_is_refused_promptly_and_nothing_runs(spawn_server, tmp_path, client_secret):
    srv = spawn_server(port=0, secret="s1")
    if client_secret:
        mesh.init(secret=client_secret)
    proof = tmp_path / "ran"
    t = time.perf_counter()
    with pytest.raises(mesh.AuthenticationError):
        Witness(str(proof), to_dist=on(srv))
    assert time.perf_counter() - t < 2.0  # not a connect timeout
    assert not proof.exists()


def test_secret_client_refuses_a_server_without_one(spawn_server):
    srv = spawn_server(port=0)  # no secret: could be anyone's server
    mesh.init(secret="s1")
    with pytest.raises(mesh.AuthenticationError):
        Store(to_dist=on(srv))


def test_env_secret_for_server_and_client(spawn_server, monkeypatch):
    monkeypatch.setenv("MESH_SECRET", "from-env")
    srv = spawn_server(port=0)
    mesh._core.settings.reset()
    assert Store(to_dist=on(srv)).add(1) == 1


def test_non_loopback_bind_needs_a_secret():
    with pytest.raises(ValueError, match="secret"):
        mesh.AgentServer(host="0.0.0.0", port=0)
    srv = mesh.AgentServer(host="0.0.0.0", port=0, insecure=True, advertise=False).launch(in_subprocess=False)
    srv.shutdown()
    out = run_cli("start", "--host", "0.0.0.0", "--port", "0", "--no-advertise")
    assert out.returncode == 2 and "secret" in out.stderr and "Traceback" not in out.stderr


def test_secret_file_for_the_cli(tmp_path):
    import subprocess
    import sys

    secret = tmp_path / "secret"
    secret.write_text("file-secret\n")
    proc = subprocess.Popen([sys.executable, "-m", "mesh.server", "start", "--host", "0.0.0.0", "--port", "0",
                             "--no-advertise", "--secret-file", str(secret)], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "auth=on" in line
        port = int(line.split("tcp://")[1].split()[0].rsplit(":", 1)[1])
        mesh.init(secret="file-secret")
        assert Store(to_dist={"host": "127.0.0.1", "port": port}).add(3) == 3
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


class Tap:
    """A TCP relay between client and server that records every byte."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.port = self.listener.getsockname()[1]
        self.seen = bytearray()
        self.lock = threading.Lock()
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            self.socks += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                with self.lock:
                    self.seen += data
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()
        for s in self.socks:
            s.close()


@pytest.mark.parametrize("secret", [None, "s3"])
def test_traffic_is_encrypted_with_a_secret(spawn_server, secret):
    srv = spawn_server(port=0, secret=secret)
    if secret:
        mesh.init(secret=secret)
    tap = Tap(srv.port)
    try:
        store = Witness(os.devnull, to_dist={"host": "127.0.0.1", "port": tap.port})
        assert store.echo(MARKER) == MARKER
        with tap.lock:
            visible = MARKER.encode() in tap.seen
        assert visible == (secret is None)  # plaintext without a secret: the check can fail
    finally:
        tap.close()
