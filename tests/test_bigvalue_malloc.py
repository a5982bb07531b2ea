"""Issue 16 target 3: a server's own process keeps freed large blocks for the next value (glibc)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mesh.server import _malloc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# In a fresh process: tune, then make and free 10 MB values the way a producer does (each made
# while the previous one is still held) and count the minor page faults of the last ones.
_PROBE = """
import resource, sys
from mesh.server import _malloc
done = _malloc.tune()
held = []
faults = []
for i in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    held.append(b"\\x01" * 10_000_000)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    if len(held) > 2:
        held.pop(0)
print(done, max(faults[4:]))
"""


def _probe(**env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in (_malloc.ENV, "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", _PROBE], env={**clean, "PYTHONPATH": ROOT, **env},
                         capture_output=True, text=True, timeout=60, check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_tuned_process_reuses_freed_10mb_blocks_instead_of_faulting_fresh_pages():
    done, faults = _probe()
    assert done == "True"
    assert faults < 500  # untuned, each such value faults ~2,440 fresh pages in


@pytest.mark.parametrize("env", [{_malloc.ENV: "default"}, {"MALLOC_ARENA_MAX": "2", "MALLOC_TRIM_THRESHOLD_": "1"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}])
def test_the_operators_choice_stands(env):
    assert _probe(**env)[0] == "False"


def test_the_dedicated_server_process_tunes_and_an_application_is_left_alone():
    import inspect

    from mesh import _cli

    source = inspect.getsource(_cli._start)
    assert "tune_malloc()" in source  # `zmq-agent-server start` (and launch(in_subprocess=True), which runs it)
    assert "tune_malloc" not in inspect.getsource(__import__("mesh.server._agent_server", fromlist=["x"]))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_mallopt_through_ctypes_internals_and_through_ctypes_alike(monkeypatch):
    """The ``_ctypes`` declaration calls libc's mallopt as ``ctypes`` would, and ``ctypes`` stands in."""
    import _ctypes

    fn = _malloc._mallopt()
    assert fn is not None and type(fn).__mro__[1] is _ctypes.CFuncPtr
    assert fn(_malloc._M_TRIM_THRESHOLD, _malloc.TRIM_THRESHOLD) == 1  # glibc: 1 on success
    import ctypes  # (before the patch: it keeps its own reference to dlopen)

    def other_dlopen(*args):
        raise TypeError("an _ctypes not as expected")

    monkeypatch.setattr(_ctypes, "dlopen", other_dlopen)
    fn = _malloc._mallopt()
    assert isinstance(fn, ctypes._CFuncPtr)
    assert fn(_malloc._M_TRIM_THRESHOLD, _malloc.TRIM_THRESHOLD) == 1
