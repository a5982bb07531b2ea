"""Text views of what servers answer (``zmq-agent-server status``): plain data in, lines out."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from mesh.server._admin import durable_cell, restorable_lines

__all__ = ["Formatter", "Parser", "VersionAction", "status_lines"]


def status_lines(info: dict[str, Any]) -> list[str]:
    """The table of one ``status`` reply; ``KeyError`` / ``TypeError`` / ``ValueError`` when it is not one."""
    lines = [f"server {info['name']}  pid {info['pid']}  uptime {info['uptime']:.0f} s  "
             f"load {info['load']}/{info['capacity']}  results {info['results']}  rss {info['rss'] / 2**20:.1f} MiB",
             f"{'CLASS':<20} {'NAME':<16} {'ID':<34} {'QUEUE':>5} {'SERVED':>7}  {'DURABLE':<12} AGENT_ID"]
    for a in info["agents"]:
        lines.append(f"{a['class']:<20} {str(a['name']):<16} {a['id']:<34} {a['queue']:>5} {a['served']:>7}  "
                     f"{durable_cell(a.get('durable')):<12} {a.get('agent_id') or '-'}")
        lines += _detail_lines(a.get("detail"))
    return lines + restorable_lines(info)


def _detail_lines(detail: Any) -> list[str]:
    """An agent's own report (``__mesh_status__``, e.g. an AutoGen directory's types and workers), indented."""
    def text(v: Any) -> str:
        return ", ".join(map(str, v)) if isinstance(v, list) else str(v)

    if detail is None or not isinstance(detail, dict):
        return [] if detail is None else [f"    {text(detail)}"]
    lines = []
    for key, value in detail.items():
        lines.append(f"    {key}:" if isinstance(value, dict) else f"    {key}: {text(value)}")
        lines += [f"      {k}: {text(v)}" for k, v in value.items()] if isinstance(value, dict) else []
    return lines


def _version() -> str:
    from importlib import metadata  # 2 MiB and 13 ms: only ``--version`` pays for it, not every server

    try:
        return metadata.version("zmq-agent-mesh")
    except metadata.PackageNotFoundError:  # a source tree that is not installed: the package's own (imported first)
        return sys.modules["mesh"].__version__


class VersionAction(argparse.Action):
    """``--version``: the version is looked up when asked for, not when the parser is built."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0,
                         help="show program's version number and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option_string: Any = None) -> None:
        print(f"{parser.prog} {_version()}", flush=True)
        parser.exit()


class Formatter(argparse.HelpFormatter):
    """argparse's help formatter, reading the terminal width without ``shutil``: argparse makes a
    formatter for every ``add_argument`` (to check it), and ``shutil`` (with bz2, lzma and zlib)
    cost every server process ~3 ms of its start for a help text it never prints."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position, _columns() - 2 if width is None else width)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` (and its sub-parsers) with :class:`Formatter` by default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)


def _columns() -> int:
    """The terminal's width as ``shutil.get_terminal_size`` reads it: ``COLUMNS``, the terminal, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80
