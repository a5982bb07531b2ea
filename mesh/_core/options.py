"""The server's options, written once: ``ServerOptions`` has one field per option (type, default,
help, validation), from which ``zmq-agent-server start``'s flags and the argv of a subprocess
server (``AgentServer.launch(in_subprocess=True)``) are generated, and which validates the
arguments of ``AgentServer(...)``.

A field's metadata: ``help``; ``check`` (value -> normalized value, or ``ValueError``); ``flag``
(default ``--field-name``; a bool whose default is True is the flag ``--no-...``); ``cli``: a flag
of ``start`` (``secret`` is not: the CLI has ``--secret-file``); ``argv``: passed to a subprocess
server on its command line (``secret`` goes in its environment, classes on its config pipe).
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import socket
from typing import TYPE_CHECKING, Any

from mesh._core.address import is_loopback

if TYPE_CHECKING:
    import argparse  # the CLI's parser: this module is also what a process launching a child server loads

__all__ = ["ServerOptions", "check_host", "env_count", "is_interface", "read_token"]

WILDCARD = ("0.0.0.0", "::", "*")
_HOST_PORT = re.compile(r"^(?P<host>\[[^\]]*\]|[^:\[\]]+):(?P<port>\d*)$")


def check_host(host: Any) -> str:
    """The address to bind for ``host``, or ``ValueError`` naming what is wrong with it.

    Accepted: an IPv4 or IPv6 address (``[::1]`` too), a wildcard (``0.0.0.0``, ``::``, ``*``),
    ``localhost``, a network interface name (``eth0``) or a host name that resolves (bound as its
    first address: libzmq cannot bind a name).
    """
    if not isinstance(host, str):
        raise ValueError(f"host must be a string such as '127.0.0.1', not {type(host).__name__} {host!r}")
    text = host.strip()
    if not text:
        raise ValueError("host is empty: use an address such as 127.0.0.1 (loopback) or 0.0.0.0 (every interface)")
    if "://" in text or "/" in text:
        raise ValueError(
            f"host {host!r} is not an address: give the bare address (e.g. --host 127.0.0.1) and the port "
            "separately (--port)"
        )
    if text in ("[::]",):
        return "::"
    if text in WILDCARD:
        return text
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        ipaddress.ip_address(bare.split("%", 1)[0])
        return bare
    except ValueError:
        pass
    match = _HOST_PORT.match(text)
    if match:
        where = match.group("host").strip("[]")
        port = match.group("port") or "PORT"
        raise ValueError(
            f"host {host!r} includes a port: pass the port separately (--host {where} --port {port}, "
            f"or host={where!r}, port={port})"
        )
    if re.fullmatch(r"[0-9.]+", text) or ":" in text:
        raise ValueError(f"host {host!r} is not a valid IP address")
    if text == "localhost":
        return "127.0.0.1"
    if is_interface(text):
        return text
    try:
        infos = socket.getaddrinfo(text, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ValueError(
            f"host {host!r} is not an IP address or an interface of this machine, and does not resolve ({exc})"
        ) from None
    addrs = [info[4][0] for info in infos]
    addrs.sort(key=lambda a: ":" in a)  # IPv4 first
    return addrs[0]


def is_interface(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]").split("%", 1)[0])
        return False  # an address, not an interface name: no need to list the interfaces (ifaddr, ctypes)
    except ValueError:
        pass
    try:
        import ifaddr
    except ImportError:  # pragma: no cover  (zeroconf depends on it)
        return False
    try:
        return any(adapter.name == name for adapter in ifaddr.get_adapters())
    except Exception:  # pragma: no cover
        return False


def _port(value: Any) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"port {value!r} is not a number") from None
    if not 0 <= port < 65536:
        raise ValueError(f"port {value} is out of range")
    return port


def _whole(what: str) -> Any:
    def check(value: Any) -> int:
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{what} must be a whole number, got {value!r}") from None
    return check


def _at_least_1(what: str) -> Any:
    whole = _whole(what)

    def check(value: Any) -> int:
        number = whole(value)
        if number < 1:
            raise ValueError(f"{what} must be at least 1, got {value}")
        return number
    return check


def env_count(name: str, default: int) -> int:
    """The whole number of at least 1 in environment variable ``name`` (else ``default``); anything
    else is a ``ValueError`` naming the variable (a server's ``MESH_STREAM_WINDOW``, ``MESH_POOL_MAX_BYTES``)."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    return _at_least_1(f"environment variable {name}={value!r}: it")(value)


def _seconds(what: str, zero: bool = False) -> Any:
    def check(value: Any) -> float:
        try:
            float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{what} must be a number of seconds, got {value!r}") from None
        if not math.isfinite(float(value)) or float(value) < 0 or (float(value) == 0 and not zero):
            raise ValueError(f"{what} must be {'0 or more' if zero else 'a positive number of'} seconds, got {value}")
        return float(value)
    return check


def _pool_type(value: Any) -> str:
    if value not in ("local", "redis"):
        raise ValueError(f"unknown pool_type {value!r}: use 'local' or 'redis'")
    return value


def _secret(value: Any) -> bytes | None:
    if isinstance(value, str):
        value = value.encode()
    if value:
        return value
    # as transport.secret_from_env(), read here: a process that only launches a child server
    # (AgentServer(...).launch()) does not load the transport (zmq, the codec) for it
    env = os.environ.get("MESH_SECRET", "")
    return env.encode() if env else None


def _http_port(value: Any) -> int | None:
    return None if value is None else _port(value)


def _token_file(value: Any) -> str | None:
    """A readable, non-empty bearer token file (its path; the token is read again where it serves)."""
    if value is None:
        return None
    try:
        read_token(str(value))
    except (OSError, ValueError) as exc:
        raise ValueError(f"--http-token-file: {exc}") from None
    return str(value)


def read_token(path: str) -> str:
    """The bearer token in ``path`` (surrounding whitespace stripped).

    Raises:
        OSError: it cannot be read. ValueError: it is empty or not one printable ASCII word.
    """
    with open(path, "rb") as fh:
        raw = fh.read(65536)
    token = raw.strip().decode("ascii", "replace")
    if not token:
        raise ValueError(f"token file {path} is empty")
    if any(not (33 <= ord(c) < 127) for c in token):
        raise ValueError(f"token file {path} must hold one word of printable ASCII (no spaces)")
    return token


class _Field:
    """One option: its name, default and metadata (what ``dataclasses.field`` held; the module is not
    loaded for it: ``dataclasses`` pulls in ``inspect`` and ``ast``, ~5 ms in a process that only
    launches a child server)."""

    __slots__ = ("name", "default", "metadata")

    def __init__(self, default: Any, metadata: dict[str, Any]) -> None:
        self.name = ""
        self.default = default
        self.metadata = metadata


def _opt(default: Any, help: str, *, type: Any = None, check: Any = None, flag: str | None = None, cli: bool = True,
         argv: bool = True, **argparse_extra: Any) -> Any:
    meta = {"help": help, "type": type, "check": check, "flag": flag, "cli": cli, "argv": argv, "extra": argparse_extra}
    return _Field(default, meta)


def _options(cls: type) -> type:
    """The fields of ``cls`` in order (``cls._fields``), each class attribute set back to its default."""
    found = []
    for name, value in list(vars(cls).items()):
        if isinstance(value, _Field):
            value.name = name
            found.append(value)
            setattr(cls, name, value.default)
    cls._fields = tuple(found)  # type: ignore[attr-defined]
    return cls


def fields(obj: Any) -> tuple[_Field, ...]:
    """The options of ``ServerOptions`` (as ``dataclasses.fields``)."""
    return obj._fields


@_options
class ServerOptions:
    """Every option of an agent server (``AgentServer``'s keywords; see its docstring).

    Raises:
        ValueError: a bad value, or a non-loopback host without a secret (from ``__post_init__``).
    """

    host: str = _opt("127.0.0.1", "address to bind: an IP address, 0.0.0.0 (every interface), localhost, an interface "
                     "name or a host name (default 127.0.0.1; any non-loopback address needs a secret)",
                     type=str, check=check_host)
    port: int = _opt(0, "port to bind (default: a free one)", type=int, check=_port)
    capacity: int = _opt(32, "calls running at once (default 32)", type=int, check=_at_least_1("capacity"))
    custom_agent_classes: Any = _opt((), "", check=list, cli=False, argv=False)  # they go on the config pipe
    agent_dir: str | None = _opt(None, "folder of *.py files defining agent classes", type=str)
    pool_type: str = _opt("local", "where async results wait", type=str, check=_pool_type, choices=("local", "redis"))
    redis_url: str | None = _opt(None, "Redis server of a redis pool, e.g. redis://127.0.0.1:6379", type=str)
    max_expire_time: float = _opt(7200, "seconds a result is kept (default 7200)", type=float,
                                  check=_seconds("max_expire_time"))
    max_len: int = _opt(10000, "most results kept, local pool (default 10000)", type=int, check=_at_least_1("max_len"))
    max_message_size: int = _opt(32 * 2**20, "largest request in bytes (default 32 MiB; 0 or less: no limit)",
                                 type=int, check=_whole("max_message_size"))
    advertise: bool = _opt(True, "do not announce the server for discovery", type=bool, check=bool)
    name: str | None = _opt(None, "server name (default: host name, pid and a random suffix)", type=str)
    secret: bytes | None = _opt(None, "", check=_secret, cli=False, argv=False)  # the CLI has --secret-file; env
    insecure: bool = _opt(False, "allow a non-loopback host without a secret", type=bool, check=bool)
    no_code: bool = _opt(False, "accept only known classes, never code sent by value", type=bool, check=bool)
    grace: float = _opt(5.0, "seconds running calls get at shutdown (default 5)", type=float,
                        check=_seconds("grace", zero=True))
    lease_ttl: float = _opt(30.0, "seconds before objects of a vanished client are deleted (default 30)", type=float,
                            check=_seconds("lease_ttl"))
    local_mode: bool | None = _opt(None, "", cli=False, argv=False)  # the CLI's --local-mode is AgentScope's flag
    http_port: int | None = _opt(None, "also serve HTTP on this port (A2A agents, /healthz, /metrics; 0: a free "
                                 "one; needs the [http] extra)", type=int, check=_http_port, flag="--http")
    http_host: str = _opt("127.0.0.1", "address of the HTTP server (default 127.0.0.1; any other address needs "
                          "--http-token-file)", type=str, check=check_host)
    http_token_file: str | None = _opt(None, "file holding the bearer token HTTP requests must carry "
                                       "(Authorization: Bearer TOKEN)", type=str, check=_token_file)
    http_max_body: int = _opt(1 << 20, "largest HTTP request body in bytes (default 1 MiB)", type=int,
                              check=_at_least_1("http_max_body"))
    state_store: str | None = _opt(None, "where durable agents' checkpoints live: a directory, or redis://HOST:PORT/DB "
                                   "(shared by the servers that may restore each other's agents; default: env "
                                   "MESH_STATE_STORE, else ~/.local/state/zmq-agent-mesh/durable)", type=str)

    _fields: tuple[_Field, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        names = [f.name for f in self._fields]
        if len(args) > len(names):
            raise TypeError(f"ServerOptions takes at most {len(names)} positional arguments ({len(args)} given)")
        for name, value in zip(names, args, strict=False):  # fewer args than names: the rest by keyword
            if name in kwargs:
                raise TypeError(f"ServerOptions got multiple values for argument {name!r}")
            kwargs[name] = value
        unknown = set(kwargs) - set(names)
        if unknown:
            raise TypeError(f"ServerOptions got an unexpected keyword argument {sorted(unknown)[0]!r}")
        for f in self._fields:
            setattr(self, f.name, kwargs.get(f.name, f.default))
        self.__post_init__()

    def __repr__(self) -> str:
        return "ServerOptions(" + ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in self._fields) + ")"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in self._fields)

    __hash__ = None  # type: ignore[assignment]  # as a dataclass with eq: mutable, unhashable

    def __post_init__(self) -> None:
        for f in fields(self):
            check = f.metadata["check"]
            if check is not None:
                setattr(self, f.name, check(getattr(self, f.name)))
            if f.name == "host" and self.local_mode is True and not is_loopback(self.host):
                # right after the address: a bad one is reported as such, before anything else
                raise ValueError("local_mode=True needs a loopback host")
        if self.pool_type == "redis" and not self.redis_url:
            raise ValueError("pool_type='redis' needs redis_url")
        if not is_loopback(self.host) and not self.secret and not self.insecure:
            raise ValueError(
                f"refusing to listen on {self.host} without a shared secret: anyone who reaches "
                "the port could run code here. Set MESH_SECRET (or --secret-file), or pass "
                "insecure=True (--insecure) on a network you trust."
            )

        if self.http_port is not None and not is_loopback(self.http_host) and not self.http_token_file:
            raise ValueError(
                f"refusing to serve HTTP on {self.http_host} without a bearer token: anyone who reaches "
                "the port could call the agents. Pass --http-token-file F (http_token_file=F), a file "
                "holding a random token that clients send as 'Authorization: Bearer TOKEN' (it is not the "
                "mesh secret), or serve HTTP on loopback."
            )
        if self.http_token_file and self.secret and read_token(self.http_token_file).encode() == self.secret:
            raise ValueError(
                "the HTTP bearer token must not be the mesh secret: HTTP clients send the token with every "
                "request, and the secret lets its holder run code on every server. Use another random token."
            )

    # -- generated: argparse flags, a subprocess's argv, keywords from parsed flags --------------
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser | Any) -> None:
        """Add a flag per option to ``parser`` (``zmq-agent-server start``)."""
        for f in fields(ServerOptions):
            meta = f.metadata
            if not meta["cli"]:
                continue
            if meta["type"] is bool:
                action = "store_false" if f.default else "store_true"
                parser.add_argument(_flag(f), dest=f.name, action=action, help=meta["help"])
            else:
                parser.add_argument(_flag(f), dest=f.name, type=meta["type"], default=f.default, help=meta["help"],
                                    **meta["extra"])

    def to_argv(self) -> list[str]:
        """The flags that give a ``start`` process these options (those it takes on its command line)."""
        argv: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if not f.metadata["argv"] or value is None:
                continue
            if f.metadata["type"] is bool:
                if bool(value) != bool(f.default):
                    argv.append(_flag(f))
            else:
                argv += [_flag(f), str(value)]
        return argv

    @staticmethod
    def from_args(args: argparse.Namespace, **more: Any) -> dict[str, Any]:
        """``AgentServer`` keywords from parsed ``start`` flags, plus ``more`` (classes, secret...)."""
        kwargs = {f.name: getattr(args, f.name) for f in fields(ServerOptions) if f.metadata["cli"]}
        kwargs.update(more)
        return kwargs


def _flag(f: Any) -> str:
    if f.metadata["flag"]:
        return f.metadata["flag"]
    return ("--no-" if f.metadata["type"] is bool and f.default else "--") + f.name.replace("_", "-")
