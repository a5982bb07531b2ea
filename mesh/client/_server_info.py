"""A live server as a ping describes it (:class:`ServerInfo`), read from the ping's plain msgpack reply."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from mesh._errors import MeshError
from mesh.client._replies import decode_plain

__all__ = ["ServerInfo", "server_info"]


@dataclass(frozen=True)
class ServerInfo:
    """A live server, as :func:`mesh.servers` reports it."""

    name: str
    address: str
    capacity: int
    load: int
    agents: int = 0
    auth: bool = False
    sources: tuple[str, ...] = ()
    reports: int = 0  # objects there with their own report (an AutoGen host's directory): ``list`` shows them

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def server_info(reply: tuple, rec: Any) -> ServerInfo:
    info = decode_plain(reply, rec.address)
    if not isinstance(info, dict):
        raise MeshError(f"{rec.address}: malformed ping reply: {type(info).__name__}, not a map")

    def number(key: str, default: int) -> int:
        value = info.get(key, default)
        if type(value) is not int or not 0 <= value < 2**31:
            raise MeshError(f"{rec.address}: malformed ping reply: {key}={value!r}")
        return value

    name = info.get("name") or rec.name
    if not isinstance(name, str) or len(name) > 256:
        raise MeshError(f"{rec.address}: malformed ping reply: name={name!r:.80}")
    return ServerInfo(
        name=name,
        address=rec.address,
        capacity=number("capacity", rec.capacity or 0),
        load=number("load", 0),
        agents=number("agents", 0),
        auth=bool(rec.auth), sources=tuple(sorted(rec.sources)), reports=number("reports", 0),
    )
