"""A plain server process loads only the serving side (issue 16, target 0: server PSS <= 17 MiB).

Every module a server imports stays in its memory for its whole life: ``zmq-agent-server start``
must not pay for the client side (``mesh.client``: proxies, futures, discovery's selection and
``hashlib`` with OpenSSL), for ``shutil`` (argparse asks it for the terminal width; it brings
``bz2`` and ``lzma``), nor for Redis support it was not given, nor
for the state store of durable objects before it hosts one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from mesh import _views as views

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_LOADED = ("mesh.client", "mesh._listing", "mesh._placement", "hashlib", "shutil", "bz2", "lzma",
              "mesh.server._store_redis", "mesh._core._state_redis", "mesh._core.redis_results", "mesh._core.state_store",
              "mesh._core.ckpt_log", "asyncio")


def _imported_by_start(advertise: bool = False, then=None, **extra_env: str) -> set[str]:
    """The modules ``python -m mesh.server start`` imported up to its ready line (``-X importtime``).

    ``then(port)`` runs while the server is up.
    """
    env = {**os.environ, "MESH_DISCOVERY": "1" if advertise else "0", **extra_env}
    flags = [] if advertise else ["--no-advertise"]
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "mesh.server", "start", "--port", "0", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # bounded: the server prints it or exits (then the line is empty)
        assert "ready on" in line, line
        if then is not None:
            then(int(line.split("ready on ")[1].split()[0].rsplit(":", 1)[1]))
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    return {row.rsplit("|", 1)[-1].strip() for row in err.splitlines() if row.startswith("import time:")}


def test_a_plain_server_process_loads_no_client_side_no_shutil_no_redis():
    imported = _imported_by_start()
    assert "mesh.server._dispatch" in imported  # the measure works: the serving side is there
    assert not {m for m in imported if m.startswith(NOT_LOADED)}
    assert "_ctypes" in imported  # it tunes glibc's malloc (mesh.server._malloc) ...
    assert "ctypes" not in imported  # ... through _ctypes alone (the ctypes package: ~0.15 MiB)


def test_an_advertising_server_loads_no_zeroconf_and_zeroconf_browsers_find_it(tmp_path):
    """Advertising (the default) costs the plain responder, not zeroconf with asyncio and ssl (~7 MiB)."""
    service_type = f"_fp{os.getpid()}._tcp.local."
    found = []

    def browse(port: int) -> None:  # a zeroconf browser in another process, mDNS only
        out = subprocess.run(
            [sys.executable, "-m", "discovery", "browse", "--json", "--once", "--timeout", "1.0", "--no-local"],
            capture_output=True, text=True, cwd=ROOT, timeout=30,
            env={**os.environ, "MESH_SERVICE_TYPE": service_type, "PYTHONPATH": ROOT},
        )
        assert out.returncode == 0, out.stderr
        found.extend(s["address"] for s in json.loads(out.stdout)["servers"])
        found.append(port)

    imported = _imported_by_start(advertise=True, then=browse, MESH_SERVICE_TYPE=service_type,
                                  MESH_REGISTRY_DIR=str(tmp_path))
    assert "discovery._responder" in imported
    assert not {m for m in imported if m.startswith(("zeroconf", "asyncio", "ssl", "ifaddr"))}
    assert found == [f"tcp://127.0.0.1:{found[-1]}", found[-1]]


def test_a_server_that_keeps_glibcs_malloc_does_not_load_ctypes():
    imported = _imported_by_start(MESH_SERVER_MALLOC="default")
    assert "mesh.server._malloc" in imported
    assert "ctypes" not in imported


@pytest.mark.parametrize("columns", ["57", "", "x"])
def test_the_cli_parser_formats_help_as_wide_as_argparse_would(monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", columns)
    parser = views.Parser(prog="p")
    assert parser._get_formatter()._width == shutil.get_terminal_size().columns - 2
    parser.add_argument("--flag", help="word " * 40)
    widest = max(len(line) for line in parser.format_help().splitlines())
    assert widest <= shutil.get_terminal_size().columns - 2
