"""Small defects found along the way (fourth pass): each would have left a user guessing."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import ROOT

SCRIPT = textwrap.dedent("""
    import threading
    import mesh
    from mesh import MeshError, RpcMeta, SerializationError

    LOCK = threading.Lock()

    class Counter(metaclass=RpcMeta):
        def __init__(self):
            self.n = 0

        def inc(self):
            with LOCK:  # a module-level lock: the class cannot travel by value
                self.n += 1
                return self.n

    srv = mesh.AgentServer(port=0, advertise=False).launch(in_subprocess=True)
    try:
        c = Counter(to_dist={"host": "127.0.0.1", "port": srv.port})
        c.inc()
        print("NO ERROR")
    except SerializationError as exc:
        assert isinstance(exc, MeshError)
        print("ERROR", exc)
    finally:
        srv.shutdown()
        mesh.shutdown()
""")


def test_a_script_class_that_cannot_travel_by_value_is_named(tmp_path):
    script = tmp_path / "app.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                         cwd=str(tmp_path), env={"PYTHONPATH": ROOT, "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip().splitlines()[-1]
    assert line.startswith("ERROR class Counter (module __main__) cannot be sent to the server by value")
    assert "_thread.lock" in line and "__init__" in line
