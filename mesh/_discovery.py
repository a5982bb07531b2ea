"""Discovery for the mesh: advertise servers, find them, check they live, pick one.

The ``discovery`` package finds candidates (zeroconf, the local registry,
static peers, Redis); records are hints only. Liveness and load come from a
ZeroMQ ``ping`` to each candidate, and a batch of new objects is spread over
the least loaded servers.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from mesh import _settings
from mesh._client import decode_reply, get_client, translate
from mesh._errors import AuthenticationError, ServerUnavailable

__all__ = ["ServerInfo", "advertise", "choose", "close_browser", "mark_dead", "servers"]

_PING_TIMEOUT = 1.0
_DEAD_FOR = 5.0  # seconds a server that failed a ping is skipped


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_lock = threading.Lock()
_browser: Any = None
_waited = False
_dead: dict[str, float] = {}
_placed: dict[str, int] = {}  # objects this process placed since the last ping of that server
_cache: tuple[float, list[ServerInfo]] = (0.0, [])


def advertise(name: str, host: str, port: int, *, capacity: int, auth: bool) -> Any:
    """Announce a server; returns an object whose ``close()`` withdraws it."""
    import discovery

    # Names are made unique (host, pid, random suffix), so mDNS probing, which costs
    # 1.2 s before other hosts can see the server, is skipped. MESH_REDIS_DISCOVERY_URL also
    # registers it in Redis, for networks without multicast (clients read the same variable).
    redis_url = os.environ.get("MESH_REDIS_DISCOVERY_URL") or None
    ip_version = "all" if ":" in host else "v4"  # an IPv6 server is announced over IPv6 mDNS too
    adv = discovery.Advertiser(
        name, host, port, capacity=capacity, auth=auth, probe=False, redis_url=redis_url, ip_version=ip_version
    )
    adv.start()
    return adv


def _get_browser() -> Any:
    global _browser
    with _lock:
        if _browser is None:
            import discovery

            _browser = discovery.Browser()
            _browser.start()
        return _browser


def close_browser() -> None:
    global _browser, _waited, _cache
    with _lock:
        browser, _browser = _browser, None
        _waited = False
        _cache = (0.0, [])
        _dead.clear()
        _placed.clear()
    if browser is not None:
        browser.close()


def _ping_all(
    records: list[Any], timeout: float, *, skip_dead: bool = True, failed: list[tuple[Any, str]] | None = None
) -> list[ServerInfo]:
    client = get_client()
    now = time.monotonic()
    futs = []
    for rec in records:
        if skip_dead and _dead.get(rec.address, 0) > now:
            continue
        futs.append((rec, client.request(rec.address, {"op": "ping"}, None, timeout=timeout)))
    live = []
    for rec, fut in futs:
        try:
            info = decode_reply(fut.result(timeout + 1), rec.address)
        except Exception as exc:
            _dead[rec.address] = time.monotonic() + _DEAD_FOR
            if failed is not None:
                failed.append((rec, _why(translate(exc))))
            continue
        live.append(ServerInfo(
            name=str(info.get("name") or rec.name),
            address=rec.address,
            capacity=int(info.get("capacity", rec.capacity) or 0),
            load=int(info.get("load", 0)),
            agents=int(info.get("agents", 0)),
            auth=bool(rec.auth),
            sources=tuple(sorted(rec.sources)),
        ))
        _placed[rec.address] = 0
        _dead.pop(rec.address, None)
    return live


def mark_dead(address: str) -> None:
    """Skip ``address`` for a while (a call to it just failed)."""
    global _cache
    _dead[address] = time.monotonic() + _DEAD_FOR
    stamp, live = _cache
    _cache = (stamp, [s for s in live if s.address != address])


def servers(timeout: float = 1.0) -> list[ServerInfo]:
    """The servers discovered now that answer a ping, least loaded first.

    Servers that were announced but do not answer this process (down, or
    their secret differs from ours) are left out; :func:`survey` tells them.

    Args:
        timeout: seconds to listen for announcements.
    """
    return survey(timeout)[0]


def survey(timeout: float = 1.0) -> tuple[list[ServerInfo], list[tuple[Any, str]]]:
    """The servers that answer, least loaded first, and the announced ones that don't, with why."""
    browser = _get_browser()
    records = browser.wait(timeout, lambda found: False) if timeout > 0 else browser.servers()
    failed: list[tuple[Any, str]] = []
    live = _ping_all(records, _PING_TIMEOUT, skip_dead=False, failed=failed)  # a listing asks everyone again
    return sorted(live, key=lambda s: (s.agents / max(s.capacity, 1), s.load, s.name)), failed


def _why(exc: BaseException) -> str:
    if isinstance(exc, AuthenticationError):
        return "its secret differs from this process's (or one side has none)"
    if isinstance(exc, ServerUnavailable):
        return "not answering"
    return f"{type(exc).__name__}: {exc}"


def choose() -> str | None:
    """The address of the server a new object should go to, or ``None`` if none is found.

    The first call waits up to ``discovery_wait`` seconds for announcements;
    later calls use what is known. Pings are cached for a second.
    """
    global _waited, _cache
    browser = _get_browser()
    if not _waited:
        browser.wait(_settings.current().discovery_wait)
        _waited = True
    stamp, live = _cache
    if time.monotonic() - stamp > 1.0:
        live = _ping_all(browser.servers(), _PING_TIMEOUT)
        _cache = (time.monotonic(), live)
    live = [s for s in live if _dead.get(s.address, 0) <= time.monotonic()]
    if not live:
        return None

    def score(s: ServerInfo) -> float:
        return (s.agents + _placed.get(s.address, 0)) / max(s.capacity, 1)

    best = min(live, key=score)
    _placed[best.address] = _placed.get(best.address, 0) + 1
    return best.address
