"""PROTOCOL.md's tables against the names the code uses (mesh/_core/wire.py): they cannot drift."""

from __future__ import annotations

import os
import re

from mesh._core import wire

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTOCOL = os.path.join(ROOT, "transport", "PROTOCOL.md")


def _section(title: str) -> str:
    text = open(PROTOCOL, encoding="utf-8").read()
    start = text.index(title)
    nxt = re.search(r"^#{2,3} ", text[start + len(title):], re.M)
    return text[start : start + len(title) + (nxt.start() if nxt else len(text))]


def _first_column(section: str) -> list[str]:
    return re.findall(r"^\| `([a-z_]+)` \|", section, re.M)


def test_the_operations_table_lists_exactly_the_ops_of_wire():
    assert sorted(_first_column(_section("## Operations"))) == sorted(wire.OPS)


def test_the_error_kinds_table_lists_exactly_the_kinds_of_wire():
    assert sorted(_first_column(_section("### Error kinds"))) == sorted(wire.KINDS)


def test_the_header_keys_table_lists_exactly_the_keys_of_wire():
    section = _section("## Header keys")
    keys = [k for cell in re.findall(r"^\| ((?:`[a-z_]+`(?:, )?)+) \|", section, re.M) for k in re.findall(r"`([a-z_]+)`", cell)]
    assert sorted(keys) == sorted(wire.HEADER_KEYS)


def test_the_server_checks_only_header_keys_of_wire():
    src = open(os.path.join(ROOT, "mesh", "server", "_checks.py"), encoding="utf-8").read()
    used = set(re.findall(r"header(?:\.get\(|\[)\"([a-z_]+)\"", src)) | set(re.findall(r"_(?:text|flag)\(header, \"([a-z_]+)\"", src))
    assert used and used <= set(wire.HEADER_KEYS), used - set(wire.HEADER_KEYS)


def test_one_way_ops_are_marked_one_way_in_the_table():
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `([a-z_]+)` \| ([^|]*)\|", _section("## Operations"), re.M)}
    assert {op for op, body in rows.items() if "one-way" in body} == set(wire.ONE_WAY)


def test_the_server_serves_every_op_of_wire_and_no_other():
    src = open(os.path.join(ROOT, "mesh", "server", "_dispatch.py"), encoding="utf-8").read()
    table = src[src.index("self._ops"): src.index("}", src.index("self._ops"))]
    assert sorted(re.findall(r"wire\.([A-Z_]+):", table)) == sorted(n for n in dir(wire) if getattr(wire, n) in wire.OPS and n.isupper() and n not in ("OPS", "ONE_WAY"))



def test_no_op_or_kind_literal_outside_wire_on_the_mesh_side():
    pattern = re.compile(r"""["'](?:op|kind)["']\s*:\s*["'][a-z]+["']""")
    offenders = []
    for base, _, files in os.walk(os.path.join(ROOT, "mesh")):
        for f in files:
            path = os.path.join(base, f)
            if f.endswith(".py") and not path.endswith(os.path.join("_core", "wire.py")):
                for n, line in enumerate(open(path, encoding="utf-8"), 1):
                    if pattern.search(line):
                        offenders.append(f"{os.path.relpath(path, ROOT)}:{n}: {line.strip()}")
    assert not offenders, "op / kind literals belong in mesh/_core/wire.py:\n" + "\n".join(offenders)
