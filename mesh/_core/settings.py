"""Process-wide settings of the mesh client, set by :func:`mesh.init`.

The only reader of ``MESH_*`` environment variables on the client side (the server's options
are :class:`mesh._core.options.ServerOptions`; ``discovery`` reads its own).
"""

from __future__ import annotations

import os

__all__ = ["DISCOVERY_MAX_PINGS", "DISCOVERY_MAX_SERVERS", "FIELDS", "Settings", "current", "reset", "update"]


def _env_float(name: str, default: float, zero_ok: bool = False) -> float:
    """``name``'s number, or ``default``; out of range (what ``mesh.init`` refuses too) is a ``ValueError``."""
    value = os.environ.get(name, "")
    try:
        number = float(value) if value else default
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not a number") from None
    if not (number > 0 or (zero_ok and number == 0)):  # NaN too
        raise ValueError(f"environment variable {name}={value!r} must be {'0 or more' if zero_ok else 'more than 0'}")
    return number


def _env_off(name: str) -> bool:
    """``name`` says off: 0, false, no or off, in any case."""
    return os.environ.get(name, "").strip().lower() in ("0", "false", "no", "off")


def _env_count(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


class _Default:
    """The default of a setting read from the environment when a ``Settings`` is made."""

    def __repr__(self) -> str:
        return "<from the environment>"


_DEFAULT = _Default()


def _env_secret() -> bytes | None:
    value = os.environ.get("MESH_SECRET", "")
    return value.encode() if value else None


class Settings:
    """Client settings. Each has an environment variable default.

    Attributes:
        secret: shared secret (``MESH_SECRET``); ``None`` means plaintext.
        call_timeout: default timeout of sync calls, seconds (``None``: wait
            as long as the server is alive).
        connect_timeout: how long a call waits for a connection, seconds.
        heartbeat_timeout: a silent peer is declared dead after this long.
        discovery: look for servers on the LAN in ``to_dist()`` (``MESH_DISCOVERY=0`` turns it off).
        discovery_wait: how long the first ``to_dist()`` waits for discovery (``MESH_DISCOVERY_WAIT``).
        child_capacity: worker threads of the child server.
        max_message_size: largest request sent to a server whose limit is unknown.
        max_inflight: requests in flight per server before issuing waits (``MESH_MAX_INFLIGHT``;
            back-pressure: an issuing thread slows down, no call fails for it; 0 turns it off).
    """

    secret: bytes | None
    call_timeout: float | None
    connect_timeout: float
    heartbeat_timeout: float
    discovery: bool
    discovery_wait: float
    child_capacity: int
    max_message_size: int
    max_inflight: int

    # A dataclass's behaviour written out (``__init__`` with these defaults, ``__repr__``, ``__eq__``):
    # ``dataclasses`` imports ``inspect`` (with ``ast`` and ``dis``), ~0.7 MiB of every server's memory.
    def __init__(
        self, secret: bytes | None | _Default = _DEFAULT, call_timeout: float | None = None,
        connect_timeout: float | _Default = _DEFAULT, heartbeat_timeout: float | _Default = _DEFAULT,
        discovery: bool | _Default = _DEFAULT, discovery_wait: float | _Default = _DEFAULT, child_capacity: int = 32,
        max_message_size: int = 32 * 2**20, max_inflight: int | _Default = _DEFAULT,
    ) -> None:
        self.secret = _env_secret() if secret is _DEFAULT else secret
        self.call_timeout = call_timeout
        self.connect_timeout = _env_float("MESH_CONNECT_TIMEOUT", 5.0) if connect_timeout is _DEFAULT else connect_timeout
        self.heartbeat_timeout = (_env_float("MESH_HEARTBEAT_TIMEOUT", 3.0) if heartbeat_timeout is _DEFAULT
                                  else heartbeat_timeout)
        self.discovery = not _env_off("MESH_DISCOVERY") if discovery is _DEFAULT else discovery
        self.discovery_wait = (_env_float("MESH_DISCOVERY_WAIT", 0.5, zero_ok=True) if discovery_wait is _DEFAULT
                               else discovery_wait)
        self.child_capacity = child_capacity
        self.max_message_size = max_message_size
        self.max_inflight = (int(_env_float("MESH_MAX_INFLIGHT", 10000, zero_ok=True)) if max_inflight is _DEFAULT
                             else max_inflight)

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in FIELDS)

    def __eq__(self, other: object) -> bool:
        return self._values() == other._values() if type(other) is type(self) else NotImplemented  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # mutable, as a dataclass

    def __repr__(self) -> str:
        return f"Settings({', '.join(f'{name}={getattr(self, name)!r}' for name in FIELDS)})"


FIELDS = ("secret", "call_timeout", "connect_timeout", "heartbeat_timeout", "discovery", "discovery_wait",
          "child_capacity", "max_message_size", "max_inflight")
"""The settings' names, in order."""


# Discovery's bounds (a host may advertise any number of fake servers), read once at import.
DISCOVERY_MAX_SERVERS = _env_count("MESH_DISCOVERY_MAX_SERVERS", 64)  # candidates considered per round
DISCOVERY_MAX_PINGS = _env_count("MESH_DISCOVERY_MAX_PINGS", 32)  # pings in flight at once

_current = Settings()


def current() -> Settings:
    return _current


def update(**settings: object) -> Settings:
    """Replace some settings; unknown names raise ``TypeError``."""
    global _current
    known = set(FIELDS)
    unknown = set(settings) - known
    if unknown:
        raise TypeError(f"unknown mesh setting(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    if isinstance(settings.get("secret"), str):
        settings["secret"] = settings["secret"].encode()  # type: ignore[union-attr]
    for name, value in settings.items():
        _check(name, value)
    values = {name: getattr(_current, name) for name in FIELDS}
    values.update(settings)
    _current = Settings(**values)  # type: ignore[arg-type]
    return _current


_SECONDS = {"call_timeout": (True, False), "connect_timeout": (False, False), "heartbeat_timeout": (False, False),
            "discovery_wait": (False, True)}  # name -> (None allowed, 0 allowed)
_COUNTS = {"child_capacity": 1, "max_inflight": 0, "max_message_size": None}  # name -> the least allowed (None: any)


def _check(name: str, value: object) -> None:
    """A value of the wrong type or range is refused here, naming the setting (not at some later call)."""
    if name == "secret":
        if value is not None and not isinstance(value, (bytes, str)):
            raise TypeError(f"mesh setting secret must be a str or bytes, not {type(value).__name__}")
    elif name == "discovery":
        if not isinstance(value, (bool, int)):
            raise TypeError(f"mesh setting discovery must be True or False, not {value!r}")
    elif name in _SECONDS:
        none_ok, zero_ok = _SECONDS[name]
        if value is None and none_ok:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"mesh setting {name} must be a number of seconds, not {value!r}")
        if not (value > 0 or (zero_ok and value == 0)) or value != value:
            raise ValueError(f"mesh setting {name} must be {'0 or more' if zero_ok else 'more than 0'} seconds, "
                             f"got {value!r}")
    elif name in _COUNTS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"mesh setting {name} must be a whole number, not {value!r}")
        least = _COUNTS[name]
        if least is not None and value < least:
            raise ValueError(f"mesh setting {name} must be at least {least}, got {value}")


def reset() -> None:
    """Back to the defaults read from the environment (tests use this)."""
    global _current
    _current = Settings()
