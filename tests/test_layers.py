"""The house's shape, checked: import contracts (import-linter), module sizes, the facade, and the
client's error table against the wire's kinds. No sockets; each test runs in well under a second
(lint-imports: about one)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mesh
from mesh._core import wire
from mesh.client import _replies

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 400
# Over the bound on this branch only until the transport split (issue 11) merges; the test below
# fails once a listed file is back under the bound, so the exception cannot outlive it.
KNOWN_OVER: set[str] = set()


def _lint_imports() -> str | None:
    here = Path(sys.executable).parent / "lint-imports"
    return str(here) if here.exists() else shutil.which("lint-imports")


def test_import_contracts_hold():
    exe = _lint_imports()
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    run = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("package", ["mesh", "transport", "discovery"])
def test_no_module_is_over_400_lines(package):
    sizes = {}
    for path in (ROOT / package).rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        with open(path, encoding="utf-8") as fh:
            sizes[rel] = sum(1 for _ in fh)
    over = {rel: n for rel, n in sizes.items() if n > MAX_LINES and rel not in KNOWN_OVER}
    assert not over, f"modules over {MAX_LINES} lines: {over}"
    stale = {rel for rel in KNOWN_OVER if rel in sizes and sizes[rel] <= MAX_LINES}
    assert not stale, f"{stale} are within the bound now: remove them from KNOWN_OVER"


def test_the_facade_exports_exactly_the_public_names_sorted():
    assert mesh.__all__ == sorted(mesh.__all__)
    assert set(mesh.__all__) == {
        "AgentBase", "AgentNotFound", "AgentServer", "AsyncResult", "AuthenticationError", "CallTimeout",
        "DistConf", "MeshError", "MessageTooLarge", "Msg", "MsgHub", "OutcomeUnknown", "Placeholder",
        "RemoteAttributeError", "RemoteError", "ResultExpired", "RpcAgentServerLauncher", "RpcMeta",
        "RpcObject", "SerializationError", "ServerInfo", "ServerUnavailable", "as_completed", "async_func", "delete",
        "get", "init", "msghub", "servers", "shutdown", "sync_func", "wait",
        # streams, cancellation and deadlines (issue 13)
        "Stream", "stream_func", "Cancelled", "DeadlineExceeded", "cancelled", "check_cancelled", "deadline", "time_left",
        # durable agents (issue 15)
        "CheckpointError", "StateStoreError",
    }
    assert issubclass(mesh.SerializationError, mesh.MeshError)


def test_every_error_kind_of_the_wire_has_a_client_side_meaning():
    assert set(_replies.KIND_ERRORS) == set(wire.KINDS)


def test_an_internal_error_reads_as_a_server_bug():
    with pytest.raises(mesh.MeshError, match="bug in the server") as info:
        _replies.raise_error(wire.err_header(wire.K_INTERNAL, "KeyError: 'x'"), "tcp://127.0.0.1:1")
    assert type(info.value) is mesh.MeshError


def test_no_error_kind_or_op_literal_on_the_client_side():
    """Kinds and ops are compared through mesh._core.wire, never spelled out (header keys may be)."""
    names = "|".join(map(re.escape, (*wire.KINDS, *wire.REPLIES, *wire.OPS)))
    pattern = re.compile(rf'(\b(op|kind)\b["\')\]]*\s*(==|!=)|"op":|"kind":)\s*"({names})"')
    found = []
    for folder in (ROOT / "mesh" / "client", ROOT / "mesh"):
        for path in folder.glob("*.py"):
            text = path.read_text(encoding="utf-8")
            found += [f"{path.name}: {m.group(0)}" for m in pattern.finditer(text)]
    assert not found, found


def test_importing_mesh_does_not_import_zeroconf():
    code = "import mesh, sys; assert 'zeroconf' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30, env={**os.environ, "MESH_DISCOVERY": "0"})


def test_a_server_process_loads_neither_the_client_side_nor_shutil():
    """``zmq-agent-server start`` (and so every child server) imports what serving needs, nothing of the
    client side (proxies, futures, discovery's selection) nor ``shutil`` (argparse's terminal width)."""
    code = (
        "import sys\n"
        "from mesh import _cli\n"
        "parser = _cli._parser()\n"
        "args = parser.parse_args(['start', '--port', '0', '--no-advertise'])\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('mesh.client') or m in ('shutil', 'zeroconf'))\n"
        "assert not loaded, loaded\n"
        "assert parser.format_help().startswith('usage: zmq-agent-server')\n"
    )
    env = {**os.environ, "MESH_DISCOVERY": "0", "COLUMNS": "100"}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30, env=env)
