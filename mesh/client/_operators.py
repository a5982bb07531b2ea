"""Comparisons and arithmetic on an ``AsyncResult``: they wait for the value, then act on it."""

from __future__ import annotations

import math
import operator
from typing import Any

__all__ = ["install"]


def _resolving(base: type, op: Any, swap: bool = False) -> Any:
    def method(self: Any, *other: Any) -> Any:
        other = tuple(o.result() if isinstance(o, base) else o for o in other)
        return op(*other, self.result()) if swap else op(self.result(), *other)

    return method


_COMPARE = ("eq", "ne", "lt", "le", "gt", "ge")
_BINARY = ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "and_", "or_", "xor", "lshift", "rshift")
# one operand: ``operator``'s, and the builtins and ``math`` functions a number's dunders serve
_UNARY = {"int": int, "float": float, "round": round, "trunc": math.trunc, "floor": math.floor, "ceil": math.ceil}
_UNARY.update((name, getattr(operator, name)) for name in ("neg", "pos", "abs", "invert", "index"))


def install(cls: type, base: type) -> None:
    """Give ``cls`` the operators (``base``: the futures an operand resolves, the mixin)."""
    for name in _COMPARE:
        setattr(cls, f"__{name}__", _resolving(base, getattr(operator, name)))
    for name, op in [(name.rstrip("_"), getattr(operator, name)) for name in _BINARY] + [("divmod", divmod)]:
        setattr(cls, f"__{name}__", _resolving(base, op))  # both ways: ``fut + 1`` and ``1 + fut``
        setattr(cls, f"__r{name}__", _resolving(base, op, swap=True))
    for name, fn in _UNARY.items():  # ``round(fut, 2)`` passes its ndigits on
        setattr(cls, f"__{name}__", _resolving(base, fn))
