"""Acceptance tests of API.md, sixth pass: the environment variables that docs/guide.md ("Settings")
says give a client its defaults, each read by a fresh application process as a user sets it:
``MESH_CONNECT_TIMEOUT``, ``MESH_HEARTBEAT_TIMEOUT``, ``MESH_MAX_INFLIGHT``, ``MESH_PEERS`` (with and
without ``MESH_DISCOVERY``); and ``mesh.init`` overriding what the environment says."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

import mesh
from conftest import ROOT, freeze, read_line

APP = r"""
import json, os, socket, sys, threading, time
import mesh

class Probe(metaclass=mesh.RpcMeta):
    def pid(self):
        return os.getpid()

    def held(self, i):  # only on this process's own server: the gate is this process's
        sys.modules["__main__"].GATE.wait(30)
        return i

GATE = threading.Event()
mode, arg = sys.argv[1], sys.argv[2]
out = {}
t0 = time.monotonic()
try:
    if mode == "connect":  # arg: a port that accepts TCP and never answers
        if "," in arg:
            mesh.init(connect_timeout=float(arg.split(",")[1]))
        Probe(to_dist={"host": "127.0.0.1", "port": int(arg.split(",")[0])}).pid()
    elif mode == "frozen":  # arg: the port of a server the test freezes
        p = Probe(to_dist={"host": "127.0.0.1", "port": int(arg)})
        print(json.dumps({"ready": p.pid()}), flush=True)
        sys.stdin.readline()
        t0 = time.monotonic()
        p.pid()
    elif mode == "inflight":  # arg: how many calls to issue while the object is held
        srv = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=False)
        p = Probe(to_dist={"host": srv.host, "port": srv.port})
        p.pid()
        futs = []
        issuer = threading.Thread(target=lambda: futs.extend(p.held.remote(i) for i in range(int(arg))), daemon=True)
        issuer.start()
        end = time.monotonic() + 10
        while len(futs) < int(arg) and time.monotonic() < end:
            last = len(futs)
            time.sleep(0.3)  # issuing stops growing: it waits (back-pressure)
            if len(futs) == last and last:
                break
        out["issued_while_held"] = len(futs)
        GATE.set()
        issuer.join(20)
        out["values"] = sum(f.result(timeout=20) for f in futs)
        srv.shutdown()
    elif mode == "peers":  # arg: the address of a server that is not advertised
        out["listed"] = [s.address for s in mesh.servers(timeout=2.0)]
        out["placed_on"] = Probe().to_dist().pid()
    out["ok"] = True
except mesh.MeshError as exc:
    out["error"] = [type(exc).__name__, [c.__name__ for c in type(exc).__mro__], str(exc)]
out["took"] = time.monotonic() - t0
out["pid"] = os.getpid()
mesh.shutdown()
print(json.dumps(out), flush=True)
"""


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_") or k in ("MESH_REGISTRY_DIR",)}
    env.update({"MESH_DISCOVERY": "0", "MESH_SERVICE_TYPE": os.environ["MESH_SERVICE_TYPE"], **extra})
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    return env


def _app(mode: str, arg: str, **env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", APP, mode, arg], capture_output=True, text=True, timeout=90,
                         env=_env(**env))  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


class Silent:
    """A TCP port that accepts connections and never says a word (no ZeroMQ handshake)."""

    def __enter__(self) -> int:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()
        return self.sock.getsockname()[1]

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_mesh_connect_timeout_bounds_the_wait_for_a_connection_and_init_overrides_it():
    with Silent() as port:
        got = _app("connect", str(port), MESH_CONNECT_TIMEOUT="1")
        assert got["error"][0] == "ServerUnavailable" and str(port) in got["error"][2], got
        assert 0.7 < got["took"] < 3.5, got  # the default would be 5 s
        got = _app("connect", f"{port},1", MESH_CONNECT_TIMEOUT="30")  # mesh.init(connect_timeout=1) wins
        assert got["error"][0] == "ServerUnavailable" and got["took"] < 3.5, got


def test_mesh_heartbeat_timeout_bounds_the_wait_on_a_frozen_server(spawn_server):
    srv = spawn_server(port=0)
    env = _env(MESH_HEARTBEAT_TIMEOUT="1")
    proc = subprocess.Popen([sys.executable, "-c", APP, "frozen", str(srv.port)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        server_pid = json.loads(read_line(proc.stdout))["ready"]
        freeze(server_pid)
        try:
            proc.stdin.write("go\n")
            proc.stdin.flush()
            got = json.loads(read_line(proc.stdout, timeout=30))
        finally:
            os.kill(server_pid, signal.SIGCONT)  # the fixture then stops it cleanly
        assert got["error"][0] == "OutcomeUnknown" and "ServerUnavailable" in got["error"][1], got
        assert got["took"] < 2.2, got  # the default heartbeat timeout is 3 s
    finally:
        proc.kill()
        proc.wait(10)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()


def test_mesh_max_inflight_makes_issuing_wait_and_nothing_fails():
    got = _app("inflight", "40", MESH_MAX_INFLIGHT="5")
    assert got.get("ok"), got
    assert 5 <= got["issued_while_held"] <= 6, got  # the issuing thread waited at the bound
    assert got["values"] == sum(range(40)), got  # then every call ran and was read
    got = _app("inflight", "40")  # the default (10,000) lets all 40 go out at once
    assert got["issued_while_held"] == 40 and got["values"] == sum(range(40)), got


class Where(metaclass=mesh.RpcMeta):
    def pid(self) -> int:
        return os.getpid()


def test_mesh_peers_lists_a_server_that_is_not_advertised_and_places_objects_there(spawn_server):
    srv = spawn_server(port=0)
    server_pid = Where(to_dist={"host": srv.host, "port": srv.port}).pid()
    got = _app("peers", srv.address, MESH_DISCOVERY="1", MESH_PEERS=f"{srv.host}:{srv.port}")
    assert got.get("ok") and srv.address in got["listed"], got
    assert got["placed_on"] == server_pid != got["pid"], (got, server_pid)
    # discovery off: to_dist() with no host looks for no server and uses this process's child server
    off = _app("peers", srv.address, MESH_DISCOVERY="0", MESH_PEERS=f"{srv.host}:{srv.port}")
    assert off.get("ok") and off["placed_on"] not in (server_pid, off["pid"]), off


BAD_ENV = r"""
import mesh
class Probe(metaclass=mesh.RpcMeta):
    def get(self):
        return 1
srv = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=False)
try:
    print("value", Probe(to_dist={"host": srv.host, "port": srv.port}).get())
except (TypeError, ValueError) as exc:
    print("refused", type(exc).__name__, exc)
finally:
    mesh.shutdown()
    srv.shutdown()
"""


@pytest.mark.parametrize(
    "name, value",
    [("MESH_CONNECT_TIMEOUT", "0"), ("MESH_CONNECT_TIMEOUT", "-1"), ("MESH_HEARTBEAT_TIMEOUT", "-2"),
     ("MESH_HEARTBEAT_TIMEOUT", "0"), ("MESH_DISCOVERY_WAIT", "-1"), ("MESH_MAX_INFLIGHT", "-5"),
     # the server's own (guide.md, "Streams" and "Lifetime of objects and results")
     ("MESH_STREAM_WINDOW", "abc"), ("MESH_STREAM_WINDOW_BYTES", "-1"), ("MESH_POOL_MAX_BYTES", "lots")],
)  # fmt: skip
def test_an_environment_value_out_of_range_is_refused_naming_the_variable(name, value):
    # guide.md, "Settings": the environment gives the defaults of the settings that mesh.init refuses
    # out of range (connect_timeout=0, heartbeat_timeout=0, ...): the same values from the environment
    # are refused the same way, naming the variable, not a raw ZMQError at a later call
    out = subprocess.run([sys.executable, "-c", BAD_ENV], capture_output=True, text=True, timeout=60,
                         env=_env(**{name: value}))  # fmt: skip
    text = out.stdout + out.stderr
    assert "ZMQError" not in text, text[-2000:]
    lines = [line for line in text.splitlines() if name in line and ("refused" in line or "Error" in line)]
    assert lines and f"{name}={value!r}" in lines[-1], text[-2000:]


@pytest.mark.parametrize("value", ["False", "OFF", " no "])
def test_mesh_discovery_off_is_understood_in_any_case(spawn_server, value):
    # guide.md: MESH_DISCOVERY ("0 turns it off"); README: on a network you do not trust, turn discovery
    # off. A user who writes False or OFF means off too: to_dist() with no host uses the child server
    srv = spawn_server(port=0)
    server_pid = Where(to_dist={"host": srv.host, "port": srv.port}).pid()
    got = _app("peers", srv.address, MESH_DISCOVERY=value, MESH_PEERS=f"{srv.host}:{srv.port}")
    assert got.get("ok") and got["placed_on"] not in (server_pid, got["pid"]), got
