"""Importable value classes for tests/test_msgpickle.py (a dataclass and an enum, importable by name
in every process that has tests/ on its path: they pickle with the C pickler)."""

from __future__ import annotations

import dataclasses
import enum


@dataclasses.dataclass
class Point:
    x: int
    y: int = 0


class Color(enum.Enum):
    RED = 1
    GREEN = 2


def double(x: int) -> int:
    return 2 * x
