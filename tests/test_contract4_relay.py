"""Acceptance test of API.md, fourth pass: "The caller never relays the value / the items" — checked by
freezing the caller (SIGSTOP) right after it passed a stream, a future and a placeholder on: the consumer still reads
every item and the value straight from the producer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from conftest import TESTS, freeze, read_line, wait_until

CALLER = """
import sys
sys.path.insert(0, {tests!r})
import mesh
from contract4_lib import Maker, SlowTeller, Writer
maker = Maker(to_dist={{"host": "127.0.0.1", "port": {p1}}})
writer = Writer(to_dist={{"host": "127.0.0.1", "port": {p2}}})
stream = maker.count(8, 0.05)        # still being produced while the caller is frozen
fut = maker.value.remote(0.3, "made")  # still running while the caller is frozen
teller = SlowTeller("teller", to_dist={{"host": "127.0.0.1", "port": {p1}}})
msg = teller(mesh.Msg("user", "hello"))  # a Placeholder of a reply not made yet
done = writer.take.remote({path!r}, stream, fut, msg)
print("sent", flush=True)
print(done.result(timeout=60), flush=True)
"""


def test_a_frozen_caller_does_not_stop_its_consumer_reading_the_producer(spawn_server, tmp_path):
    producer, consumer = spawn_server(port=0), spawn_server(port=0)
    out = str(tmp_path / "taken.json")
    script = CALLER.format(tests=TESTS, p1=producer.port, p2=consumer.port, path=out)
    caller = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "MESH_DISCOVERY": "0"})
    try:
        assert read_line(caller.stdout, timeout=30).strip() == "sent"
        # frozen once the consumer's call is there (before, the caller's I/O thread may not have sent it)
        wait_until(lambda: os.path.exists(out + ".started"), timeout=30)
        freeze(caller.pid)
        wait_until(lambda: os.path.exists(out), timeout=30)
        with open(out) as fh:
            assert json.load(fh) == {"items": list(range(8)), "value": "made", "msg": "told hello"}
        os.kill(caller.pid, signal.SIGCONT)
        assert read_line(caller.stdout, timeout=30).strip() == "8"
        assert caller.wait(30) == 0
    finally:
        if caller.poll() is None:
            os.kill(caller.pid, signal.SIGCONT)
            caller.kill()
            caller.wait()
        caller.stdout.close()
