"""The request of one ``create`` and what its reply sets up on the client (limits, lease)."""

from __future__ import annotations

from typing import Any

from mesh import _byvalue
from mesh._core import wire

__all__ = ["ref_of"]


def _send_create(
    client: Any, address: str, cls: type, args: tuple, kwargs: dict, object_id: str, name: str | None,
    detached: bool, attrs: dict | None, by_value: bool, durable: tuple[int, int] | None = None,
    fallback: bytes | None = None,
) -> Any:
    # args as a list: a tuple is encoded as an extension value (a nested msgpack), a list is plain
    payload: dict[str, Any] = {"args": list(args), "kwargs": kwargs}
    if attrs:
        payload["attrs"] = attrs  # kept across to_dist(), e.g. an agent's agent_id
    header: dict[str, Any] = {"op": wire.CREATE, "obj": object_id, "cls": ref_of(cls)}
    if name is not None:
        header["name"] = str(name)
    if detached:
        header["detached"] = 1
    else:
        client.own(address)
    if durable is not None:
        header["ckpt"], header["restarts"] = durable
    if not by_value:
        if fallback is not None:  # for a server that cannot import it: no second round trip (needclass)
            payload["fallback"] = fallback
            payload["py"] = wire.PY_VERSION
        return client.request(address, header, payload, timeout=client.settings.call_timeout)
    payload["blob"] = _byvalue.blob(cls)
    payload["py"] = wire.PY_VERSION
    with _byvalue.class_by_value(cls):  # the arguments may hold instances of the module's classes
        return client.request(address, header, payload, timeout=client.settings.call_timeout)


def ref_of(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _created(client: Any, address: str, info: dict, detached: bool) -> None:
    limit = info.get("max_message_size")
    if isinstance(limit, int):
        client.peers.set_limit(address, limit)
    if not detached and isinstance(info.get("lease_ttl"), (int, float)):
        client.own(address, float(info["lease_ttl"]))
