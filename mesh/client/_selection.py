"""Server selection (the caller's side of discovery; servers advertise in mesh.server._host): find servers, check they live, pick one.

The ``discovery`` package finds candidates (zeroconf, the local registry,
static peers, Redis); records are hints only. Liveness and load come from a
ZeroMQ ``ping`` to each candidate, and a batch of new objects is spread over
the least loaded servers.

The first placement of a process waits until answers stop arriving: the local
registry and static peers are read at once; mDNS answers come within
milliseconds of the browser's one-shot query, pings within milliseconds more.
It ends once every announced server answered and no new server was announced for
``_QUIET`` seconds (ping answers do not restart that clock), or when nothing at all
was announced within ``_FIRST`` seconds (then the caller uses its child
server), and at the latest after ``discovery_wait``. A background thread then
keeps the table fresh (a ping to each server every ``_REFRESH`` seconds), so
later placements never wait and see servers that appear late.

Bounds (a host may advertise any number of fake servers; read in ``mesh._core.settings``): at most
``MESH_DISCOVERY_MAX_SERVERS`` (default 64) candidates are considered per
round, at most ``MESH_DISCOVERY_MAX_PINGS`` (default 32) pings are in flight at
once, a candidate that fails is skipped for 5 s, doubling up to 60 s, and the
connection to a candidate that did not answer (or answered garbage) is closed.

Ping and status replies are decoded as plain msgpack, never unpickled: a
server that is not one of ours cannot run code here by answering a ping.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from typing import Any

from mesh._core import settings, wire
from mesh._core.settings import DISCOVERY_MAX_PINGS as MAX_PINGS, DISCOVERY_MAX_SERVERS as MAX_SERVERS
from mesh._errors import AuthenticationError, CallTimeout, MeshError, ServerUnavailable
from mesh.client._client import get_client
from mesh.client._replies import translate
from mesh.client._server_info import ServerInfo, server_info as _server_info
from mesh.client._spread import Runs

__all__ = ["MAX_PINGS", "MAX_SERVERS", "ServerInfo", "choose", "close_browser", "mark_dead", "servers", "settled",
           "survey"]


_PING_TIMEOUT = 1.0
_DEAD_FOR = 5.0  # seconds a server that failed a ping is skipped (doubled per failure in a row)
_DEAD_MAX = 60.0
_FIRST = 0.06  # s: nothing announced this long after the mDNS query went out: no server (use the child)
_QUIET = 0.04  # s: the first placement waits until all answered and no new record came for this long
_QUIET_LIST = 0.15  # s: a listing's quiet time (mDNS responders may delay an answer 120 ms, RFC 6762 s. 6)
_REREAD = 0.05  # s: while settling, the browser's records are read again at least this often
_REFRESH = 1.0  # s: a server's ping is renewed this often in the background
_IDLE = 60.0  # s: the background refresh stops after this long without a placement or listing


class _State:
    """What this process knows of the discovered servers (guarded by ``_cond``)."""

    def __init__(self) -> None:
        self.live: dict[str, ServerInfo] = {}
        self.result: dict[str, tuple[float, str | None]] = {}  # address -> (when, None or why it failed)
        self.records: dict[str, Any] = {}  # address -> record, of the pings in flight
        self.pending: dict[str, int] = {}  # address -> placements made when its ping was sent
        self.placed: dict[str, int] = {}  # address -> objects this process placed there, ever
        self.base: dict[str, int] = {}  # address -> placements the server's last answer already counts
        self.dead: dict[str, float] = {}
        self.fails: dict[str, int] = {}
        self.last_event = 0.0
        self.news = False  # the browser told of a change since _settle last read its records
        self.changed = False  # the browser told of a change since the refresher last read its records
        self.settled = False
        self.used = 0.0
        self.refresher: threading.Thread | None = None
        self.closed = False
        self.salt = os.urandom(8)
        self.salted: dict[str, bytes] = {}  # address -> its salted hash (the candidates' order)
        self.runs = Runs(self.placed)  # the current run of placements on one server (mesh.client._spread)


_lock = threading.Lock()
_cond = threading.Condition(threading.RLock())
_browser: Any = None
_state = _State()


def _notify() -> None:  # the browser's records changed
    with _cond:
        _state.news = _state.changed = True
        _cond.notify_all()


def _get_browser() -> Any:
    global _browser
    with _lock:
        if _browser is None:
            from discovery import Browser  # probe_first: zeroconf only once a plain mDNS probe is answered

            _browser = Browser(probe_first=True)
            _browser.add_listener(_notify)
            _browser.start()
        return _browser


def close_browser() -> None:
    global _browser, _state
    with _lock:
        browser, _browser = _browser, None
        with _cond:
            _state.closed = True
            _state = _State()
            _cond.notify_all()
    if browser is not None:
        browser.close()


def settled() -> bool:
    """The first placement's discovery is done (later ones do not wait)."""
    return _state.settled


# ------------------------------------------------------------------ pings
def _candidates(records: list[Any], st: _State, now: float) -> tuple[list[Any], list[Any]]:
    """(at most MAX_SERVERS records to ping, the ones left out): known-good first, then the
    local registry and static peers, then the rest in an order of this process's own (salted),
    so that fake names cannot push a real server out everywhere; skipped ones come last."""

    def key(rec: Any) -> tuple:
        a = rec.address
        rank = min(({"local": 0, "static": 0, "mdns": 1, "redis": 1}.get(s, 2) for s in rec.sources), default=2)
        salted = st.salted.get(a)
        if salted is None:
            if len(st.salted) >= 4 * MAX_SERVERS:
                st.salted.clear()
            salted = st.salted[a] = hashlib.blake2b(a.encode(), key=st.salt).digest()
        return (st.dead.get(a, 0) > now, a not in st.live, rank, salted)

    ordered = sorted(records, key=key)
    return ordered[:MAX_SERVERS], ordered[MAX_SERVERS:]


def _send_pings(records: list[Any], st: _State, now: float, *, since: float | None = None) -> None:
    """Ping the candidates that need it, at most MAX_PINGS in flight (call with ``_cond`` held).

    ``since``: ping every candidate whose last result is older (a listing); else those not
    pinged for ``_REFRESH`` seconds and not skipped as dead.
    """
    chosen, _ = _candidates(records, st, now)
    client = None
    for rec in chosen:
        if len(st.pending) >= MAX_PINGS:
            return
        a = rec.address
        if a in st.pending:
            continue
        last = st.result.get(a, (-1e18, None))[0]
        if since is not None:
            if last >= since:
                continue
        elif st.dead.get(a, 0) > now or now - last < _REFRESH:
            continue
        client = client or get_client()
        st.pending[a] = st.placed.get(a, 0)
        st.records[a] = rec
        try:
            fut = client.request(a, {"op": wire.PING}, None, timeout=_PING_TIMEOUT)
        except Exception as exc:
            _record(st, rec, None, exc)
            continue
        fut.add_done_callback(lambda f, rec=rec, st=st: _on_ping(st, rec, f))


def _on_ping(st: _State, rec: Any, fut: Any) -> None:  # on the I/O thread, or at once: must not block
    info, error = None, None
    try:
        info = _server_info(fut.result(), rec)
    except BaseException as exc:  # noqa: BLE001 - every failure makes the server unusable, nothing more
        error = exc
    with _cond:
        _record(st, rec, info, error)


def _record(st: _State, rec: Any, info: ServerInfo | None, error: BaseException | None) -> None:
    now = time.monotonic()
    a = rec.address
    sent_placed = st.pending.pop(a, st.placed.get(a, 0))
    st.records.pop(a, None)
    st.last_event = now
    if info is not None:
        st.live[a] = info
        st.base[a] = sent_placed
        st.result[a] = (now, None)
        st.dead.pop(a, None)
        st.fails.pop(a, None)
    else:
        exc = translate(error) if error is not None else MeshError("no reply")
        if isinstance(exc, CallTimeout) and a in st.live and not st.closed:
            # answered before, slow now (our creations queued there): busy, not gone; a dead or hung
            # one is told by the transport's heartbeat, which fails the ping (and every call) soon after
            st.result[a] = (now, None)
            _cond.notify_all()
            return
        st.live.pop(a, None)
        st.runs.drop(a)
        st.result[a] = (now, _why(exc))
        fails = st.fails[a] = min(st.fails.get(a, 0) + 1, 16)
        st.dead[a] = now + min(_DEAD_FOR * 2 ** (fails - 1), _DEAD_MAX)
        if not isinstance(exc, (ServerUnavailable, AuthenticationError)) or isinstance(exc, CallTimeout):
            # it took the connection and did not answer, or answered garbage: do not keep its sockets
            # (refused connections and failed handshakes are closed by the transport already)
            if not st.closed:
                get_client().node.forget(a)
    _cond.notify_all()


def mark_dead(address: str) -> None:
    """Skip ``address`` for a while (a call to it just failed)."""
    with _cond:
        _state.dead[address] = time.monotonic() + _DEAD_FOR
        _state.live.pop(address, None)
        _state.runs.drop(address)


# ------------------------------------------------------------------ listing
def servers(timeout: float = 1.0) -> list[ServerInfo]:
    """The servers discovered now that answer a ping, least loaded first.

    Servers that were announced but do not answer this process (down, or
    their secret differs from ours) are left out; :func:`survey` tells them.

    Returns as soon as the answers are in: once every announced server answered its ping and
    no new server was announced for a short quiet time (0.15 s), or about 60 ms after the mDNS query when
    nothing at all is announced; ``timeout`` bounds the wait for announcements.

    Args:
        timeout: seconds to listen for announcements at most (0: the servers known now).
    """
    return survey(timeout)[0]


def survey(timeout: float = 1.0) -> tuple[list[ServerInfo], list[tuple[Any, str]]]:
    """The servers that answer, least loaded first, and the announced ones that don't, with why.

    Every candidate is asked again (at most ``MAX_SERVERS``; the others are reported as not tried).
    """
    browser = _get_browser()
    start = time.monotonic()
    with _cond:
        st = _state
        st.used = start
        if timeout > 0:
            _settle(browser, st, timeout, quiet=_QUIET_LIST, since=start)
        records = browser.servers()
        chosen, left = _candidates(records, st, time.monotonic())
        deadline = start + _PING_TIMEOUT * (len(chosen) // MAX_PINGS + 1) + 1.0
        while not st.closed:
            _send_pings(chosen, st, time.monotonic(), since=start)
            if all(st.result.get(r.address, (0.0, None))[0] >= start for r in chosen):
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            _cond.wait(min(remaining, 0.1))
        live, failed = [], []
        for rec in chosen:
            when, why = st.result.get(rec.address, (0.0, "not answering"))
            info = st.live.get(rec.address)
            if when >= start and why is None and info is not None:
                live.append(info)
            else:
                failed.append((rec, why if when >= start and why else "not answering"))
    failed += [(rec, f"not tried: more than {MAX_SERVERS} servers announced (MESH_DISCOVERY_MAX_SERVERS)")
               for rec in left]
    return sorted(live, key=lambda s: (s.agents / max(s.capacity, 1), s.load, s.name)), failed


def _why(exc: BaseException) -> str:
    if isinstance(exc, AuthenticationError):
        return "its secret differs from this process's (or one side has none)"
    if isinstance(exc, ServerUnavailable):
        return "not answering"
    if isinstance(exc, CallTimeout):
        return "not answering (no reply to a ping)"
    return f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------- placement
def _settle(browser: Any, st: _State, window: float, *, quiet: float = _QUIET, since: float | None = None) -> None:
    """Wait until answers stop arriving (see the module docstring); call with ``_cond`` held.

    ``quiet``: seconds without news that end it; ``since``: ping every candidate not answered
    since then (a listing), not only those due for a refresh.
    """
    start = time.monotonic()
    deadline = start + max(0.0, window)
    st.last_event = last_new = start
    known: set[str] = set()
    records: list[Any] = []
    read_at = -1.0
    while not st.closed:
        now = time.monotonic()
        if st.news or now - read_at >= _REREAD:  # (a ping's answer alone changes no record: not re-read)
            st.news = False
            records, read_at = browser.servers(), now
            new = {r.address for r in records} - known
            if new:
                known |= new
                st.last_event = last_new = now
        _send_pings(records, st, now, since=since)
        if now >= deadline:
            return
        if not known:
            asked = browser.asked_at()  # the clock starts when the mDNS query is out
            first = deadline if asked is None else min(deadline, max(asked, start) + _FIRST)
            if now >= first:
                return  # nothing announced anywhere: the caller's child server
            wake = first if asked is not None else now + 0.005
        else:
            unanswered = any(st.result.get(a, (-1.0, None))[0] < start for a in known)
            if not unanswered:
                if now - last_new >= quiet:
                    return  # every candidate answered, and nothing new was announced for `quiet`
                wake = last_new + quiet
            elif st.live:
                if now - st.last_event >= 3 * quiet:
                    return  # a slow one is left to the background refresh
                wake = st.last_event + 3 * quiet
            else:
                wake = now + _REREAD
        _cond.wait(max(0.001, min(wake, deadline, now + _REREAD) - now))


def _refresh(browser: Any, st: _State) -> None:
    """Background: keep pinging the servers (and new candidates) while this process places objects.

    The browser's records are read again when it tells of a change (mDNS) or once per ``_REFRESH``
    (for sources that may not notify: the local registry, Redis), not on every wake-up: reading
    them builds and merges every server's record (~0.7 ms at 20 servers), four times a second."""
    records: list[Any] = []
    read_at = -1e18
    while True:
        with _cond:
            if st.closed or time.monotonic() - st.used > _IDLE:
                st.refresher = None
                return
            reread = st.changed or time.monotonic() - read_at >= _REFRESH
            st.changed = False
        if reread:
            read_at = time.monotonic()
            try:
                records = browser.servers()
            except Exception:  # the browser was closed under us
                records = []
        with _cond:
            if st.closed:
                st.refresher = None
                return
            _send_pings(records, st, time.monotonic())
            _cond.wait(_REFRESH / 4)


def choose() -> str | None:
    """The address of the server a new object should go to, or ``None`` if none is found.

    The first call waits for discovery to settle (at most ``discovery_wait`` seconds; about
    ``_FIRST`` seconds when nothing is announced); later calls use the table that a background
    thread keeps fresh. Consecutive calls go to one server in short runs (:mod:`mesh.client._spread`):
    within a run a call is a counter and a dict update, not a look over every server.
    """
    st = _state
    now = time.monotonic()
    if st.refresher is not None and now - st.used <= _IDLE:  # (settled: a run is only opened after that)
        runs = st.runs
        address = runs.take() or runs.planned()  # within a run, or the round's next: under the runs' lock only
        if address is not None:
            st.used = now
            return address
    browser = _get_browser()
    with _cond:
        st = _state
        now = time.monotonic()
        idle = now - st.used > _IDLE
        st.used = now
        if not st.settled or (idle and st.refresher is None):
            _settle(browser, st, settings.current().discovery_wait)
            st.settled = True
        if st.refresher is None and not st.closed:
            st.refresher = threading.Thread(target=_refresh, args=(browser, st), name="mesh-discovery", daemon=True)
            st.refresher.start()
        now = time.monotonic()
        live = [s for s in st.live.values() if st.dead.get(s.address, 0) <= now]
        if not live:
            st.runs.drop()
            return None
        return st.runs.start(live, st.base)
