"""The mesh on a virtual LAN: servers on hosts 1 and 2, the application on host 3.

Discovery finds both servers and spreads agents; a server that stops is dropped; a host that is
cut off is declared dead within the heartbeat timeout and avoided; calls fail instead of hanging
and resume when the link returns; a returning host is found again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from vlan import LineReader, VirtualLan, in_isolated_netns

pytestmark = pytest.mark.skipif(not in_isolated_netns() or os.geteuid() != 0, reason="needs root in an isolated network namespace")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))
PORT = 7100


def env() -> dict:
    e = dict(os.environ)
    e.pop("MESH_REGISTRY_DIR", None)  # per-namespace local registries: hosts must find each other over mDNS
    e.update({"MESH_SECRET": "lan-test-secret", "MESH_DISCOVERY": "1", "PYTHONPATH": os.pathsep.join([ROOT, TESTS]),
              "MESH_HEARTBEAT_TIMEOUT": "1.5", "MESH_CONNECT_TIMEOUT": "2"})
    return e


def start_server(lan: VirtualLan, i: int) -> LineReader:
    proc = lan.popen(i, [sys.executable, "-m", "mesh.server", "start", "--host", lan.host_ip(i), "--port", str(PORT),
                         "--name", f"host{i}", "--capacity", "8", "--grace", "1"], stdout=subprocess.PIPE, text=True, env=env())
    out = LineReader(proc.stdout)
    out.wait_for(lambda line: "ready on" in line, timeout=20)
    out.proc = proc  # type: ignore[attr-defined]
    return out


APP = textwrap.dedent('''
    import json, sys, time
    import mesh
    from agents_lib import Store
    mesh.init(discovery_wait=3.0)
    import logging; logging.basicConfig(level=logging.DEBUG if __import__("os").environ.get("LANDEBUG") else logging.WARNING)
    def say(**kw):
        print(json.dumps(kw), flush=True)
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        try:
            if cmd == "servers":
                say(servers=sorted(s.name for s in mesh.servers(timeout=float(arg or 0))))
            elif cmd == "place":
                stores = [Store().to_dist() for _ in range(int(arg))]
                say(placed=sorted(s._mesh_address for s in stores), sums=[s.add(1) for s in stores])
            elif cmd == "hold":        # a long call in flight on the given address
                held = Store(to_dist={"host": arg, "port": %d})
                from agents_lib import Producer
                prod = Producer(to_dist={"host": arg, "port": %d})
                fut = prod.make(10, delay=60)
                say(holding=arg)
            elif cmd == "wait":        # how the held call ends
                t = time.perf_counter()
                try:
                    fut.result(timeout=30)
                    say(result="value")
                except mesh.MeshError as exc:
                    say(result=type(exc).__name__, after=time.perf_counter() - t)
            elif cmd == "call":
                t = time.perf_counter()
                try:
                    s = Store(to_dist={"host": arg, "port": %d})
                    say(call=s.add(5), after=time.perf_counter() - t)
                except mesh.MeshError as exc:
                    say(call=type(exc).__name__, after=time.perf_counter() - t, msg=str(exc))
        except Exception as exc:
            say(error=repr(exc))
''' % (PORT, PORT, PORT))


class App:
    def __init__(self, lan: VirtualLan) -> None:
        self.proc = lan.popen(3, [sys.executable, "-c", APP], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env())
        self.out = LineReader(self.proc.stdout)

    def ask(self, cmd: str, timeout: float = 30) -> dict:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return json.loads(self.out.wait_for(lambda line: line.startswith("{") and line, timeout=timeout))


def test_mesh_on_a_virtual_lan():
    with VirtualLan(n=3) as lan:
        s1 = start_server(lan, 1)
        s2 = start_server(lan, 2)
        app = App(lan)
        a1, a2 = f"tcp://{lan.host_ip(1)}:{PORT}", f"tcp://{lan.host_ip(2)}:{PORT}"

        # both found, agents spread over both
        assert app.ask("servers 3")["servers"] == ["host1", "host2"]
        placed = app.ask("place 4")
        assert placed["placed"] == sorted([a1, a1, a2, a2]) and placed["sums"] == [1] * 4

        # host 2 cut off: a call in flight fails within the heartbeat timeout, new agents avoid it
        assert app.ask(f"hold {lan.host_ip(2)}")["holding"]
        lan.link_down(2)
        ended = app.ask("wait")
        assert ended["result"] == "ServerUnavailable" and ended["after"] < 10, ended
        after_cut = app.ask("place 3")
        assert set(after_cut["placed"]) == {a1}
        cut_call = app.ask(f"call {lan.host_ip(2)}")
        assert cut_call["call"] == "ServerUnavailable" and cut_call["after"] < 10, cut_call

        # link back: calls resume without restarting the application, and host 2 is placed on again
        lan.link_up(2)
        deadline = time.monotonic() + 15  # the link needs a moment (neighbour discovery, reconnect)
        while (resumed := app.ask(f"call {lan.host_ip(2)}"))["call"] != 5 and time.monotonic() < deadline:
            assert resumed["call"] == "ServerUnavailable", resumed
        assert resumed["call"] == 5, resumed
        deadline = time.monotonic() + 15
        while (found := app.ask("servers 0.5")["servers"]) != ["host1", "host2"] and time.monotonic() < deadline:
            pass
        assert found == ["host1", "host2"]

        # a clean stop is dropped at once
        assert VirtualLan.stop_process(s2.proc) == 0
        assert app.ask("servers 0")["servers"] == ["host1"]
        assert set(app.ask("place 2")["placed"]) == {a1}

        # a SIGKILLed server is avoided (its mDNS records linger; the ping decides)
        s1.proc.kill()
        s1.proc.wait(10)
        assert app.ask("servers 0")["servers"] == []
