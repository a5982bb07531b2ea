"""The server record every discovery source produces, and address parsing.

A :class:`ServerRecord` is a *hint*: where a server said it listens. Whether it
still answers is for the caller to check (the mesh pings over ZeroMQ).

The same record travels as JSON (local registry files, Redis values) with these
keys, all optional except ``host`` and ``port``:

=========== ======= =================================================
key         type    meaning
=========== ======= =================================================
``v``       int     format version, 1
``name``    str     server instance name
``host``    str     preferred address to connect to
``port``    int     TCP port
``cap``     int     capacity
``auth``    bool    the server requires a shared secret
``py``      str     Python ``major.minor`` of the server
``proto``   int     wire protocol major version
``pid``     int     process id of the server
``start``   int     the process start time (``/proc/<pid>/stat`` field 22)
``addrs``   list    every address the server advertised
=========== ======= =================================================
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from typing import Any

__all__ = [
    "PROTO_VERSION",
    "SERVICE_TYPE",
    "ServerRecord",
    "format_hostport",
    "instance_label",
    "parse_address",
    "python_version",
    "record_from_dict",
    "record_to_dict",
    "resolve_service_type",
    "txt_properties",
]

SERVICE_TYPE = "_agentmesh._tcp.local."
"""The default DNS-SD service type; ``MESH_SERVICE_TYPE`` overrides it when an object is built."""

PROTO_VERSION = 1
"""Wire protocol major version advertised by default."""

_RECORD_FORMAT = 1  # the ``v`` key of the JSON form, never renumber
_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?$")


class _DataclassFields:
    """``ServerRecord.__dataclass_fields__``, made at first use from a frozen dataclass of the same
    fields: ``dataclasses.replace``, ``fields``, ``asdict`` and ``is_dataclass`` work on a record as on a
    dataclass, and only a process that asks them imports ``dataclasses`` (with ``inspect``, ``ast`` and
    ``dis``: ~0.7 MiB of an advertising server's memory for its whole life)."""

    def __get__(self, obj: object, owner: type) -> Any:
        import dataclasses

        namespace = {"__annotations__": dict.fromkeys(_FIELDS, Any), "__module__": owner.__module__}
        namespace.update({k: v for k, v in _DEFAULTS.items() if k != "sources"})
        namespace["sources"] = dataclasses.field(default_factory=frozenset)
        shadow = dataclasses.dataclass(frozen=True)(type(owner.__name__, (), namespace))
        type.__setattr__(owner, "__dataclass_params__", shadow.__dataclass_params__)
        type.__setattr__(owner, "__dataclass_fields__", shadow.__dataclass_fields__)
        return shadow.__dataclass_fields__


_FIELDS = ("name", "host", "port", "capacity", "auth", "py", "proto", "pid", "addresses", "sources")
_DEFAULTS: dict[str, Any] = {"capacity": 0, "auth": False, "py": "", "proto": PROTO_VERSION, "pid": 0,
                             "addresses": (), "sources": frozenset()}


class ServerRecord:
    """One server as discovery sees it.

    Attributes:
        name: unique server instance name (at most 63 bytes for mDNS).
        host: the preferred address to connect to.
        port: TCP port.
        capacity: how many objects the server accepts (0: unknown).
        auth: the server requires a shared secret.
        py: the server's Python ``major.minor``, e.g. ``"3.11"``.
        proto: the wire protocol major version.
        pid: the server's process id (0: unknown).
        addresses: every address the server advertised (``host`` among them).
        sources: where it was found, a subset of ``{"mdns", "local", "static", "dns", "redis"}``.
    """

    name: str
    host: str
    port: int
    capacity: int
    auth: bool
    py: str
    proto: int
    pid: int
    addresses: tuple[str, ...]
    sources: frozenset[str]

    # A frozen dataclass's behaviour written out (see _DataclassFields)
    __dataclass_fields__ = _DataclassFields()
    __match_args__ = _FIELDS

    def __init__(self, name: str, host: str, port: int, capacity: int = 0, auth: bool = False, py: str = "",
                 proto: int = PROTO_VERSION, pid: int = 0, addresses: tuple[str, ...] = (),
                 sources: frozenset[str] | None = None) -> None:
        self.__dict__.update(name=name, host=host, port=port, capacity=capacity, auth=auth, py=py, proto=proto,
                             pid=pid, addresses=addresses, sources=frozenset() if sources is None else sources)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}")

    def _values(self) -> tuple[Any, ...]:
        d = self.__dict__
        return tuple(d[name] for name in _FIELDS)

    def __eq__(self, other: object) -> bool:
        return self._values() == other._values() if type(other) is type(self) else NotImplemented  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        d = self.__dict__
        return f"{type(self).__qualname__}({', '.join(f'{name}={d[name]!r}' for name in _FIELDS)})"

    @property
    def address(self) -> str:
        """The ZeroMQ endpoint, ``tcp://host:port`` (``tcp://[v6]:port`` for IPv6)."""
        return f"tcp://{format_hostport(self.host, self.port)}"


def format_hostport(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_port(text: str, whole: str) -> int:
    if not text.isdigit():
        raise ValueError(f"invalid address {whole!r}: port {text!r} is not a number")
    port = int(text)
    if not 0 < port < 65536:
        raise ValueError(f"invalid address {whole!r}: port {port} is not in 1..65535")
    return port


def _check_host(host: str, whole: str) -> str:
    if not host:
        raise ValueError(f"invalid address {whole!r}: no host")
    if host == "*":
        raise ValueError(f"invalid address {whole!r}: '*' is a bind wildcard, not an address to connect to")
    try:
        return str(ipaddress.ip_address(host))  # normalised; keeps an IPv6 scope ("fe80::1%eth0")
    except ValueError:
        pass
    if ":" in host or not _HOSTNAME.match(host):
        raise ValueError(f"invalid address {whole!r}: {host!r} is not a host name or IP address")
    return host


def parse_address(text: str, default_port: int | None = None) -> tuple[str, int]:
    """Split an address into ``(host, port)``.

    Accepts ``tcp://host:port``, ``host:port``, ``[v6]:port``, and, when
    ``default_port`` is given, ``host``, ``[v6]`` or a bare IPv6 address.
    IPv6 hosts are returned without brackets.

    Args:
        text: the address.
        default_port: the port to use when ``text`` has none.

    Returns:
        ``(host, port)``.

    Raises:
        ValueError: the address is malformed; the message names it and says why.
    """
    if not isinstance(text, str):
        raise ValueError(f"invalid address {text!r}: not a string")
    whole = text
    rest = text.strip()
    if not rest:
        raise ValueError(f"invalid address {whole!r}: empty")
    if "://" in rest:
        scheme, rest = rest.split("://", 1)
        if scheme.lower() != "tcp":
            raise ValueError(f"invalid address {whole!r}: scheme {scheme!r} is not supported (only tcp://)")
    if "/" in rest:
        raise ValueError(f"invalid address {whole!r}: unexpected '/'")
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise ValueError(f"invalid address {whole!r}: missing ']' after an IPv6 address")
        host, tail = rest[1:end], rest[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid address {whole!r}: {host!r} in brackets is not an IPv6 address") from None
        if tail.startswith(":"):
            return _check_host(host, whole), _check_port(tail[1:], whole)
        if tail:
            raise ValueError(f"invalid address {whole!r}: unexpected {tail!r} after ']'")
        port_text = None
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
        return _check_host(host, whole), _check_port(port_text, whole)
    elif rest.count(":") > 1:
        # A bare IPv6 address: only acceptable as a host when a default port is given.
        if default_port is None:
            raise ValueError(f"invalid address {whole!r}: write an IPv6 address with a port as [addr]:port")
        host, port_text = rest, None
    else:
        host, port_text = rest, None
    if default_port is None:
        raise ValueError(f"invalid address {whole!r}: no port (expected host:port)")
    return _check_host(host, whole), _check_port(str(default_port), whole)


def resolve_service_type(service_type: str | None) -> str:
    """The service type to use: the argument, else ``MESH_SERVICE_TYPE``, else :data:`SERVICE_TYPE`."""
    chosen = service_type or os.environ.get("MESH_SERVICE_TYPE") or SERVICE_TYPE
    if not chosen.endswith("."):
        chosen += "."
    if not (chosen.endswith("._tcp.local.") and chosen.startswith("_")):
        raise ValueError(f"invalid service type {chosen!r}: expected '_name._tcp.local.'")
    return chosen


def python_version() -> str:
    """This interpreter's ``major.minor``."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def record_to_dict(rec: ServerRecord, **extra: Any) -> dict[str, Any]:
    """The JSON form of a record (see the module docstring); ``extra`` keys are added."""
    out: dict[str, Any] = {
        "v": _RECORD_FORMAT,
        "name": rec.name,
        "host": rec.host,
        "port": rec.port,
        "cap": rec.capacity,
        "auth": rec.auth,
        "py": rec.py,
        "proto": rec.proto,
        "pid": rec.pid,
        "addrs": list(rec.addresses),
    }
    out.update(extra)
    return out


def record_from_dict(data: Any, source: str) -> ServerRecord:
    """Build a record from its JSON form, checking every field.

    Raises:
        ValueError: a field is missing or has the wrong type.
    """
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")

    def get(key: str, typ: type | tuple[type, ...], default: Any) -> Any:
        value = data.get(key, default)
        if isinstance(value, bool) and typ is int:
            raise ValueError(f"field {key!r} is not an int")
        if not isinstance(value, typ):
            raise ValueError(f"field {key!r} has type {type(value).__name__}")
        return value

    host = get("host", str, None)
    port = get("port", int, None)
    host, port = parse_address(format_hostport(host, port))
    addrs = get("addrs", list, [])
    if not all(isinstance(a, str) for a in addrs):
        raise ValueError("field 'addrs' holds a non-string")
    addresses = tuple(dict.fromkeys([host, *addrs]))
    return ServerRecord(
        name=get("name", str, "") or format_hostport(host, port),
        host=host,
        port=port,
        capacity=get("cap", int, 0),
        auth=get("auth", bool, False),
        py=get("py", str, ""),
        proto=get("proto", int, PROTO_VERSION),
        pid=get("pid", int, 0),
        addresses=addresses,
        sources=frozenset({source}),
    )


_TXTVERS = "1"


def instance_label(name: str) -> str:
    """The DNS-SD instance label for a server name (dots would split the label)."""
    return name.replace(".", "-")


def txt_properties(rec: ServerRecord) -> dict[str, str]:
    """The TXT keys of a record, as mDNS advertises them (``txtvers=1``, small and static)."""
    return {
        "txtvers": _TXTVERS,
        "proto": str(rec.proto),
        "name": rec.name,
        "cap": str(rec.capacity),
        "auth": "1" if rec.auth else "0",
        "py": rec.py,
        "pid": str(rec.pid),
    }
