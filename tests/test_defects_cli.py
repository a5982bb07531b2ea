"""Issue 10, points 18-20 and 22: the command line, the Python launcher and the docs as a new user meets them."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from conftest import ROOT, TESTS, run_cli

ADDRESS = re.compile(r"tcp://\S+:\d+")
LONG_SECRET = "a-long-enough-shared-secret-for-tests"


def _popen(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mesh.server", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def _line(stream, timeout: float = 30.0) -> str:
    """The next line of ``stream``, or ``""`` when none comes within ``timeout`` (never hangs the test)."""
    box: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: box.put(stream.readline()), daemon=True).start()
    try:
        return box.get(timeout=timeout)
    except queue.Empty:
        return ""


def _ready(proc: subprocess.Popen) -> str:
    line = _line(proc.stdout)
    if not ADDRESS.search(line):
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"no ready line: {line!r}; stderr: {err}")
    return line


def _end(proc: subprocess.Popen, wait: float = 0.0) -> tuple[int, str]:
    """Wait up to ``wait`` s for ``proc`` to exit, then kill it; returns its exit code and the rest of its stderr."""
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
    _, err = proc.communicate(timeout=20)
    return proc.returncode, err


def _secret_file(tmp_path, text: str = LONG_SECRET, mode: int = 0o600):
    path = tmp_path / "secret"
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


# ----------------------------------------------------------------- point 18
def test_agentscope_start_line_runs_with_only_the_command_renamed(tmp_path):
    # AgentScope: as_server start --host localhost --port P --model-config-path F
    configs = tmp_path / "model_configs.json"
    configs.write_text("[]")
    proc = _popen("start", "--host", "localhost", "--port", "0", "--model-config-path", str(configs))
    try:
        line = _ready(proc)
        assert "ready on tcp://127.0.0.1:" in line
        proc.send_signal(signal.SIGTERM)
        rc, err = _end(proc, 20)
        assert rc == 0 and "--model-config-path" in err and "Traceback" not in err
    finally:
        _end(proc)


def test_help_says_model_config_path_is_ignored():
    out = run_cli("start", "--help")
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    assert "--model-config-path" in text and "accepted and ignored" in text


@pytest.mark.parametrize("argv", [["--host", "127.0.0.1", "--port", "12001"], ["--port", "0"]])
def test_missing_start_says_did_you_mean_start(argv):
    out = run_cli(*argv)
    assert out.returncode == 2
    assert "did you mean start" in out.stderr and "usage:" in out.stderr and "Traceback" not in out.stderr
    assert not out.stdout  # nothing started


def test_misspelt_command_gets_a_suggestion():
    out = run_cli("statsu", "127.0.0.1:1")
    assert out.returncode == 2 and "did you mean status" in out.stderr


def test_no_command_is_a_usage_error():
    out = run_cli()
    assert out.returncode == 2 and "start" in out.stderr and "Traceback" not in out.stderr


# ----------------------------------------------------------------- point 19
@pytest.mark.parametrize(
    "host, says",
    [("999.1.1.1", "not a valid IP address"), ("localhost:12001", "includes a port"),
     ("tcp://127.0.0.1", "not an address"), ("no-such-host.invalid", "does not resolve")],
)
def test_bad_host_is_reported_before_the_secret(host, says):
    out = run_cli("start", "--host", host, "--port", "0", "--no-advertise")
    assert out.returncode == 2
    assert host in out.stderr and says in out.stderr, out.stderr
    assert "secret" not in out.stderr and "Traceback" not in out.stderr


def test_bad_host_from_python_is_a_value_error_naming_it():
    import mesh

    with pytest.raises(ValueError, match=r"'999\.1\.1\.1' is not a valid IP address"):
        mesh.AgentServer(host="999.1.1.1")
    with pytest.raises(ValueError, match="includes a port"):
        mesh.AgentServer(host="localhost:12001")


def test_wildcard_ready_line_names_addresses_a_client_can_use(monkeypatch):
    import discovery._net
    from mesh.server import AgentServer
    from mesh.server._launcher import ready_info, ready_line

    monkeypatch.setattr(discovery._net, "local_addresses", lambda version=None, names=None: ["198.18.0.1", "127.0.0.1"])
    server = AgentServer(host="0.0.0.0", port=12001, insecure=True, name="w")
    line = ready_line(ready_info(server))
    assert line.startswith("zmq-agent-server ready on tcp://198.18.0.1:12001 (name=w, capacity=32,")
    assert "bound to 0.0.0.0, also reachable at tcp://127.0.0.1:12001)" in line
    assert ADDRESS.search(line).group(0) == "tcp://198.18.0.1:12001"  # what parsers of the line take
    plain = ready_line(ready_info(AgentServer(host="127.0.0.1", port=12001, name="p")))
    assert plain.startswith("zmq-agent-server ready on tcp://127.0.0.1:12001 (name=p,") and "bound" not in plain


def test_wildcard_server_prints_a_usable_address():
    import mesh
    from agents_lib import Store

    proc = _popen("start", "--host", "0.0.0.0", "--port", "0", "--no-advertise", "--insecure")
    try:
        line = _ready(proc)
        address = ADDRESS.search(line).group(0)
        assert "0.0.0.0" not in address and "bound to 0.0.0.0" in line
        assert Store(to_dist={"host": address}).add(2) == 2
        mesh.shutdown()
        proc.send_signal(signal.SIGTERM)
        assert _end(proc, 20)[0] == 0
    finally:
        _end(proc)


def test_start_json_prints_one_json_line_with_the_address():
    proc = _popen("start", "--port", "0", "--no-advertise", "--json")
    try:
        line = _ready(proc)
        info = json.loads(line)
        assert info["event"] == "ready" and info["address"] == ADDRESS.search(line).group(0)
        assert info["address"].startswith("tcp://127.0.0.1:") and info["auth"] is False
        proc.send_signal(signal.SIGTERM)
        assert _end(proc, 20)[0] == 0
    finally:
        _end(proc)


@pytest.mark.parametrize("text, mode, warns", [
    ("short", 0o600, ["5 bytes", "at least 16"]),
    (LONG_SECRET, 0o644, ["group or others", "chmod 600"]),
    (LONG_SECRET, 0o600, []),
])
def test_weak_secret_file_gets_a_warning(tmp_path, text, mode, warns):
    secret = _secret_file(tmp_path, text, mode)
    proc = _popen("start", "--port", "0", "--no-advertise", "--secret-file", str(secret))
    try:
        assert "auth=on" in _ready(proc)
        proc.send_signal(signal.SIGTERM)
        rc, err = _end(proc, 20)
        assert rc == 0
        for w in warns:
            assert w in err, err
        assert ("warning" in err) == bool(warns), err
    finally:
        _end(proc)


def test_status_and_stop_take_secret_file(tmp_path):
    secret = _secret_file(tmp_path)
    proc = _popen("start", "--port", "0", "--no-advertise", "--secret-file", str(secret))
    try:
        address = ADDRESS.search(_ready(proc)).group(0)
        denied = run_cli("status", address, "--timeout", "3")
        assert denied.returncode == 1 and "Traceback" not in denied.stderr
        out = run_cli("status", address, "--json", "--secret-file", str(secret))
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["capacity"] == 32
        out = run_cli("stop", address, "--json", "--secret-file", str(secret))
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {"ok": True, "address": address, "stopping": True}
        assert proc.wait(20) == 0
    finally:
        _end(proc)


def test_json_errors_of_status_and_stop():
    for cmd in ("status", "stop"):
        out = run_cli(cmd, "127.0.0.1:1", "--json", "--timeout", "2")
        assert out.returncode == 1 and "Traceback" not in out.stderr
        result = json.loads(out.stdout)
        assert result["ok"] is False and "127.0.0.1:1" in result["error"]


def test_version():
    from importlib.metadata import version

    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"zmq-agent-server {version('zmq-agent-mesh')}"


# ----------------------------------------------------------------- point 20
LAUNCHER = textwrap.dedent("""
    import sys
    import mesh as agentscope
    from mesh import RpcAgentServerLauncher
    from agents_lib import Store

    agentscope.init(model_configs={})
    launcher = RpcAgentServerLauncher(host="localhost", port=0, custom_agent_classes=[Store], capacity=4)
    launcher.launch(in_subprocess=sys.argv[1] == "subprocess")
    launcher.wait_until_terminate()
""")


@pytest.mark.parametrize("mode", ["subprocess", "here"])
@pytest.mark.parametrize("signum, codes", [(signal.SIGTERM, (0,)), (signal.SIGINT, (0, 130))])
def test_python_launcher_behaves_like_the_cli(tmp_path, mode, signum, codes):
    import mesh
    from agents_lib import Store

    script = tmp_path / "launch_server.py"
    script.write_text(LAUNCHER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, TESTS])}
    proc = subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        line = _line(proc.stderr)  # the ready line goes to stderr: stdout stays the program's
        match = ADDRESS.search(line)
        assert line.startswith("zmq-agent-server ready on ") and match, (line, _end(proc))
        assert Store(to_dist={"host": match.group(0)}).add(5) == 5
        mesh.shutdown()
        proc.send_signal(signum)
        rc, err = _end(proc, 20)
        assert rc in codes, err
        assert "Traceback" not in err
    finally:
        _end(proc)


# ----------------------------------------------------------------- point 22
DOCS = ["README.md", "docs/guide.md", "docs/operations.md", "SECURITY.md", "CHANGELOG.md", "transport/PROTOCOL.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _read(rel: str) -> str:
    with open(os.path.join(ROOT, rel), encoding="utf-8") as fh:
        return fh.read()


@pytest.mark.parametrize("doc", DOCS)
def test_doc_links_resolve_inside_the_repository(doc):
    base = os.path.dirname(os.path.join(ROOT, doc))
    for target in LINK.findall(_read(doc)):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = os.path.realpath(os.path.join(base, target.split("#", 1)[0]))
        assert path.startswith(os.path.realpath(ROOT) + os.sep), f"{doc} links outside the repository: {target}"
        assert os.path.exists(path), f"{doc} links to a missing file: {target}"


@pytest.mark.parametrize("doc", DOCS)
def test_docs_refer_to_nothing_outside_the_repository(doc):
    text = _read(doc)
    for bad in ("../shared", "shared folder", "/work/", "API.md"):
        assert bad not in text, f"{doc} refers to {bad!r}, which is not in the repository"


def test_readme_links_the_guides_security_and_changelog():
    links = set(LINK.findall(_read("README.md")))
    for doc in ("docs/guide.md", "docs/operations.md", "SECURITY.md", "CHANGELOG.md"):
        assert doc in links, f"README does not link {doc}"


def test_readme_first_screen_is_what_it_is_then_demo_and_tests():
    first = _read("README.md").split("\n---", 1)[0]
    assert first.startswith("# zmq-agent-mesh\n")
    demo, test = first.index("bin/demo"), first.index("bin/test")
    assert first.index("actor mesh") < demo < test
    for cmd in ("bin/demo", "bin/test"):
        assert os.access(os.path.join(ROOT, cmd), os.X_OK)


def test_operations_guide_says_how_to_install_from_a_checkout():
    text = _read("docs/operations.md")
    assert "pip install -e" in text and "[redis]" in text
    assert "not on" in text  # says the package is not on an index yet


def test_a_state_store_the_server_cannot_make_is_refused_at_start(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    out = run_cli("start", "--port", "0", "--no-advertise", "--state-store", str(blocker / "store"))
    assert out.returncode == 2
    assert "state store" in out.stderr and "cannot create the directory" in out.stderr and "ready" not in out.stdout
    made = tmp_path / "made" / "here"  # a directory that can be made is made, and the server starts
    import mesh

    srv = mesh.AgentServer(port=0, advertise=False, state_store=str(made)).launch(in_subprocess=True)
    try:
        assert made.is_dir()
    finally:
        srv.shutdown()
