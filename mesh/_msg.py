"""The message that agents exchange."""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["Msg"]

_FIELDS = ("id", "timestamp", "name", "content", "role", "url", "metadata")


def _uuid4_hex() -> str:
    """What ``uuid.uuid4().hex`` gives, without importing ``uuid`` (and ``platform``) into a plain server."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    return b.hex()


class Msg:
    """A message: who said what.

    Args:
        name: the sender's name.
        content: any value (text, dict, ...).
        role: ``"assistant"``, ``"user"`` or ``"system"``.
        url: an optional link or list of links (images, files).
        metadata: optional extra data.
        **extra: further fields, kept and compared like the others.

    Two messages are equal when all their fields (``id`` and ``timestamp``
    included) are equal. ``msg["content"]`` works as ``msg.content``.
    """

    def __init__(
        self,
        name: str,
        content: Any = None,
        role: str = "assistant",
        url: str | list[str] | None = None,
        metadata: Any = None,
        **extra: Any,
    ) -> None:
        self.id: str = extra.pop("id", None) or _uuid4_hex()
        self.timestamp: str = extra.pop("timestamp", None) or datetime.datetime.now().strftime(
            "%Y-%m-%d %H:%M:%S.%f"
        )
        self.name = name
        self.content = content
        self.role = role
        self.url = url
        self.metadata = metadata
        for key, value in extra.items():
            setattr(self, key, value)

    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain dict (``Msg.from_dict`` inverts it)."""
        d = {k: getattr(self, k) for k in _FIELDS}
        for key, value in vars(self).items():
            if key not in d and not key.startswith("_"):
                d[key] = value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Msg:
        """Rebuild a message from :meth:`to_dict` output.

        Raises:
            TypeError: ``d`` is not a mapping.
            ValueError: ``d`` has no ``name``.
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"Msg.from_dict() takes a dict (as Msg.to_dict() makes), not {type(d).__name__}")
        if "name" not in d:
            raise ValueError("a Msg dict needs a 'name'")
        return Msg(**dict(d))

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Msg):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Msg(name={self.name!r}, content={self.content!r}, role={self.role!r})"
