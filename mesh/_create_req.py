"""The request of one ``create`` and what its reply sets up on the client (limits, lease)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from mesh import _byvalue, _pipeline
from mesh._core import wire
from mesh.client._replies import translate

__all__ = ["connected", "first_pipelined", "inflight_fallback", "ref_of"]

_BURST = 16  # creations of a class sent with the fallback while its first there is unanswered; the next one waits
_firsts: dict[tuple, list] = {}  # (address, cls) -> [its first creation's proxy, creations sent with the fallback]


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


def first_pipelined(
    client: Any, address: str, cls: type, args: tuple, kwargs: dict, object_id: str, methods: dict, by_value: bool,
    extra: tuple, trying: set, fallback_ok: bool, track: Callable[..., None],
) -> Any:
    """The first creation of ``cls`` on ``address`` (not named, detached or durable): it returns once
    the request is out and the connection is up (:func:`connected`), without waiting for the reply.
    A constructor error, or a class the server cannot load, shows at the proxy's first use, as for
    later objects (:mod:`mesh._pipeline`). Later creations of the class there, while this one is not
    answered, are pipelined too (``trying`` holds ``(address, cls)`` meanwhile).

    ``fallback_ok``: carry the class by value for a server that cannot import it (not for our child
    server, which imports what we import). ``track``: placement's ``_track``.
    """
    if fallback_ok and not by_value:
        client.node.connect(address)  # the handshake runs while the class is pickled
    fallback = _byvalue.fallback(cls) if fallback_ok and not by_value else None
    proxy = _pipeline.make(address, object_id, cls.__name__, methods)
    fut = _send_create(client, address, cls, args, kwargs, object_id, None, False, extra[6], by_value,
                       fallback=fallback)
    key = (address, cls)
    trying.add(key)
    track(proxy, extra, fut, first=True)
    if len(_firsts) >= 4096:
        _firsts.clear()
    first = _firsts[key] = [proxy, 0]
    fut.add_done_callback(lambda _f: first.__setitem__(0, None))  # answered: the proxy is not needed (nor what it holds)
    try:
        connected(client, address, fut)
    except BaseException:
        trying.discard(key)
        raise
    return proxy


def inflight_fallback(key: tuple, proven: set) -> bytes | None:
    """The fallback for a creation of ``key``'s class sent while its first there is not answered, so
    the server never asks for the class (``needclass``) and a resend at first use. Each such creation
    is a ``create`` of its own (batches carry no fallback), so past a short burst this waits for the
    first answer once and returns None: the caller batches from then on (by value if the server took
    the fallback). Also None when no first creation is known (placed by discovery: as before)."""
    first = _firsts.get(key)
    if first is None:
        return None
    if first[1] < _BURST:
        first[1] += 1
        return _byvalue.fallback(key[1])
    _firsts.pop(key, None)
    if first[0] is not None:
        _pipeline.settle(first[0], quiet=True)  # (its error, if any, shows at its own first use)
    return None if key in proven else _byvalue.fallback(key[1])


def connected(client: Any, address: str, fut: Any) -> None:
    """Wait until the connection that carries ``fut`` (a ``create`` just sent) is up, not for the
    reply: a first creation that returns before the server answered still fails right here when
    the server is unreachable or refuses our secret (``fut`` fails before any handshake succeeds).

    Bounded by the connect timeout (the transport gives the connection up by then: ``fut`` fails).

    Raises:
        ServerUnavailable, AuthenticationError: ``fut`` failed before the connection was up.
    """
    if client.node.on_io_thread():  # (a callback there creating an object: it cannot wait for itself)
        return
    settled = threading.Event()
    client.node.when_connected(address, settled.set)
    fut.add_done_callback(lambda _fut: settled.set())
    settled.wait(client.settings.connect_timeout + 1.0)
    if fut.done() and fut.exception() is not None:
        raise translate(fut.exception()) from None
