"""Comparisons and arithmetic on an ``AsyncResult``: they wait for the value, then act on it."""

from __future__ import annotations

import operator
from typing import Any

__all__ = ["install"]


def _resolving(base: type, op: Any, swap: bool = False) -> Any:
    def method(self: Any, *other: Any) -> Any:
        other = tuple(o.result() if isinstance(o, base) else o for o in other)
        return op(*other, self.result()) if swap else op(self.result(), *other)

    return method


def install(cls: type, base: type) -> None:
    """Give ``cls`` the operators (``base``: the futures an operand resolves, the mixin)."""
    for name, op in {
        "eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le, "gt": operator.gt,
        "ge": operator.ge, "add": operator.add, "sub": operator.sub, "mul": operator.mul,
        "truediv": operator.truediv, "floordiv": operator.floordiv, "mod": operator.mod, "pow": operator.pow,
    }.items():
        setattr(cls, f"__{name}__", _resolving(base, op))
        if name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow"):
            setattr(cls, f"__r{name}__", _resolving(base, op, swap=True))
    for name, fn in {"neg": operator.neg, "abs": abs, "int": int, "float": float, "index": operator.index}.items():
        setattr(cls, f"__{name}__", _resolving(base, fn))
