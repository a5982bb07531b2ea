"""The docs against the code, fifth pass: every ``mesh.`` name that README.md and docs/ mention exists,
every ``zmq-agent-server`` command line they show is accepted, and their examples run."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys

import pytest

import mesh
from conftest import ROOT, run_cli

DOCS = ["README.md", "SECURITY.md", "docs/guide.md", "docs/operations.md", "docs/edge.md", "docs/autogen.md",
        "docs/tracing.md", "docs/architecture.md"]
NOT_NAMES = {"mesh.example", "mesh.agent"}  # a DNS name (mesh.example:12001) and a span attribute key


def _read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as fh:
        return fh.read()


def _blocks(text):
    """(language, lines) of each fenced block."""
    out, lang, lines = [], None, []
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if lang is None:
                lang, lines = line.strip()[3:] or "text", []
            else:
                out.append((lang, lines))
                lang = None
        elif lang is not None:
            lines.append(line)
    return out


def _resolve(dotted):
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


@pytest.mark.parametrize("doc", DOCS)
def test_every_mesh_name_a_doc_mentions_exists(doc):
    names = set(re.findall(r"\bmesh(?:\.[A-Za-z_][A-Za-z0-9_]*)+", _read(doc))) - NOT_NAMES
    missing = []
    for name in sorted(names):
        if name.rsplit(".", 1)[-1] in ("md", "py", "txt"):  # a file name, not an attribute
            continue
        try:
            _resolve(name)
        except (ImportError, AttributeError):
            missing.append(name)
    assert not missing, f"{doc} mentions names that do not exist: {missing}"


def _command_lines():
    for doc in DOCS:
        for _, lines in _blocks(_read(doc)):
            joined = "\n".join(lines).replace("\\\n", " ")
            for line in joined.splitlines():
                line = line.split("#", 1)[0].strip()
                if line.startswith("zmq-agent-server ") and not line.startswith("zmq-agent-server ready "):
                    yield doc, line  # (a "ready on ..." line is the output that a doc shows)


COMMANDS = sorted(set(_command_lines()))


def test_the_docs_show_command_lines():
    assert len(COMMANDS) >= 5 and {line.split()[1] for _, line in COMMANDS} >= {"start", "list", "status", "stop"}


@pytest.mark.parametrize("doc,line", COMMANDS)
def test_every_command_line_a_doc_shows_names_a_command_and_flags_that_exist(doc, line):
    words = line.split()
    command = words[1]
    out = run_cli(command, "--help")
    assert out.returncode == 0, f"{doc}: `{line}`: {out.stderr}"
    for flag in (w.split("=", 1)[0] for w in words[2:] if w.startswith("--")):
        assert flag in out.stdout, f"{doc}: `{line}`: {command} has no flag {flag}"


def _python_block(doc, first_line):
    for lang, lines in _blocks(_read(doc)):
        if lang == "python" and lines and lines[0].strip() == first_line:
            return "\n".join(lines)
    raise AssertionError(f"{doc} has no python block starting with {first_line!r}")


def test_the_readme_example_runs_as_written(tmp_path):
    code = _python_block("README.md", "import mesh")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == str(["answer to q"] * 5)


def test_the_guides_stream_examples_do_what_they_say():
    # docs/guide.md, "Streams": a @stream_func reply's Placeholder iterates its chunks, and its
    # content is the chunks joined
    code = _python_block("docs/guide.md", "class Writer(mesh.AgentBase):")
    scope = {"mesh": mesh}
    exec(compile(code, "guide.md", "exec"), scope)  # noqa: S102  (the example asserts p.content == "Hello")
    w = scope["w"]
    with mesh.deadline(30):  # guide.md's deadline example: a Placeholder passed on under one deadline
        review = w(w(mesh.Msg("user", "task")))
        assert review.content == "Hello"


def test_the_guides_msghub_example_does_what_it_says():
    class Talker(mesh.AgentBase):
        def reply(self, x):
            return mesh.Msg(self.name, f"{self.name} has heard {[m.content for m in self.memory]}")

    alice, bob = Talker("alice", to_dist=True), Talker("bob", to_dist=True)
    code = _python_block("docs/guide.md", 'with mesh.msghub([alice, bob], announcement=mesh.Msg("host", "let\'s talk")) as hub:')
    exec(compile(code, "guide.md", "exec"), {"mesh": mesh, "alice": alice, "bob": bob})  # noqa: S102
    heard = [m.content for m in bob.memory]  # "bob has heard the host and alice before he speaks"
    assert heard[0] == "let's talk" and heard[1].startswith("alice has heard")
    said = [m.content for m in alice.memory if m.content.startswith("bob has heard")]  # alice heard bob's reply
    assert len(said) == 1 and "let's talk" in said[0] and "alice has heard" in said[0]


def test_the_edge_guides_server_attributes_exist():
    pytest.importorskip("uvicorn")
    server = mesh.AgentServer(port=0, http_port=0, advertise=False)  # edge.md: "http_port=0: a free port"
    server.launch(in_subprocess=False)
    try:
        assert server.http_port > 0 and server.http_url == f"http://127.0.0.1:{server.http_port}"
    finally:
        server.shutdown()
