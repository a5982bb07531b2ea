"""``mesh.msghub``: broadcast to a group of plain mesh agents (AgentScope's message hub).

Inside ``with msghub(participants, announcement) as hub:``, ``hub(agent, x)`` calls ``agent(x)`` and
shows its reply to every other participant (their ``observe``); ``hub.broadcast(msg)`` shows a message
to all. It needs no AutoGen: any ``mesh.AgentBase`` (local or distributed with ``to_dist``) takes part.

The fan-out never waits for a reply and never relays its content: the reply's ``Placeholder`` goes to
each observer, which fetches the message from the producer itself (as any future passed on the mesh).
Each participant observes in the order of the broadcasts, and has observed everything shown to
it before ``hub(agent, x)`` calls it (as in AgentScope, a speaker has heard the others); ``flush()`` (called on leaving the ``with``)
waits until every participant has observed everything and raises the first error.

Inside the ``with``, calling a participant directly, ``agent(x)``, is the same as ``hub(agent, x)``
(AgentScope's participants broadcast their replies to their audience): code written for
AgentScope's msghub (``with msghub([a, b]): x = a(x); x = b(x)``) runs unchanged. A participant of
several hubs at once speaks in all of them. Registered in :mod:`mesh.client._hubs`.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterable
from typing import Any

import mesh.client._hubs as _hubs

__all__ = ["MsgHub", "msghub"]


def _listify(x: Any) -> list[Any]:
    if x is None:
        return []
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:
        return False


class MsgHub:
    """A group of agents that see each other's replies. Use :func:`msghub`."""

    def __init__(self, participants: Iterable[Any], announcement: Any = None) -> None:
        self.participants: list[Any] = []
        self._lanes: list[tuple[Any, concurrent.futures.ThreadPoolExecutor]] = []
        self._pending: list[concurrent.futures.Future] = []
        self._announcement = announcement
        self._entered = False
        self.add(list(participants))

    # ------------------------------------------------------------------ membership
    def add(self, new_participant: Any) -> None:
        """Add an agent (or a list of them); it sees what is broadcast from now on."""
        for agent in _listify(new_participant):
            if any(_same(agent, p) for p in self.participants):
                continue
            if not callable(getattr(agent, "observe", None)):
                raise TypeError(f"a msghub participant needs an observe() method, not {type(agent).__name__}")
            self.participants.append(agent)
            self._lanes.append((agent, concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="msghub")))
            if self._entered:
                _join(agent, self)

    def delete(self, participant: Any) -> None:
        """Remove an agent (or a list of them)."""
        for agent in _listify(participant):
            for i, (p, lane) in enumerate(self._lanes):
                if _same(p, agent):
                    del self._lanes[i]
                    del self.participants[i]
                    lane.shutdown(wait=False)
                    if self._entered:
                        _leave(p, self)
                    break

    # ------------------------------------------------------------------ talking
    def broadcast(self, msg: Any, exclude: Iterable[Any] = ()) -> None:
        """Show ``msg`` (a message, a future of one, or a list) to every participant but ``exclude``."""
        excluded = _listify(exclude)
        for agent, lane in self._lanes:
            if any(_same(agent, e) for e in excluded):
                continue
            self._pending.append(lane.submit(agent.observe, msg))

    def _drain(self, agent: Any) -> None:
        for p, lane in self._lanes:
            if _same(p, agent):
                lane.submit(lambda: None).result()  # a lane runs in order: everything before is done
                break

    def __call__(self, agent: Any, x: Any = None) -> Any:
        """``agent(x)``, whose reply every other participant then observes; returns the reply."""
        hubs = _hubs.speakers.get(_hubs.key(agent)) or []
        return _speak(agent, agent, (x,), {}, hubs if self in hubs else [self, *hubs])

    speak = __call__

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every broadcast so far has been observed; raises the first error."""
        pending, self._pending = self._pending, []
        done, not_done = concurrent.futures.wait(pending, timeout=timeout)
        self._pending.extend(not_done)
        for fut in pending:
            if fut in done and fut.exception() is not None:
                raise fut.exception()  # type: ignore[misc]
        if not_done:
            raise TimeoutError(f"{len(not_done)} observation(s) not done within {timeout} s")

    # ------------------------------------------------------------------ context
    def __enter__(self) -> MsgHub:
        if self._announcement is not None:
            self.broadcast(self._announcement)
        self._entered = True
        for agent in self.participants:
            _join(agent, self)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._entered = False
        for agent in self.participants:
            _leave(agent, self)
        try:
            if exc[0] is None:
                self.flush()
        finally:
            for _, lane in self._lanes:
                lane.shutdown(wait=exc[0] is None)


def _speak(agent: Any, call: Any, args: tuple, kwargs: dict, hubs: list[MsgHub]) -> Any:
    """``call(*args, **kwargs)`` as ``agent`` speaking in ``hubs``: it has heard what each hub showed
    it, then its reply is shown to the others of each."""
    for hub in hubs:
        hub._drain(agent)  # what was shown to it so far is in its memory before it speaks
    speaking, k = _hubs.speaking(), _hubs.key(agent)
    nested = k in speaking
    speaking.add(k)  # its own __call__ does not speak a second time
    try:
        reply = call(*args, **kwargs)
    finally:
        if not nested:
            speaking.discard(k)
    for hub in hubs:
        hub.broadcast(reply, exclude=[agent])
    return reply


_hubs.speak = _speak


def _join(agent: Any, hub: MsgHub) -> None:
    hubs = _hubs.speakers.setdefault(_hubs.key(agent), [])
    if hub not in hubs:
        hubs.append(hub)


def _leave(agent: Any, hub: MsgHub) -> None:
    k = _hubs.key(agent)
    hubs = _hubs.speakers.get(k)
    if hubs is not None and hub in hubs:
        hubs.remove(hub)
        if not hubs:
            del _hubs.speakers[k]


def msghub(participants: Iterable[Any], announcement: Any = None) -> MsgHub:
    """A message hub over ``participants`` (AgentScope's ``msghub``): use it as a context manager.

    ``announcement`` (a message or a list) is observed by every participant on entering.
    """
    return MsgHub(participants, announcement)
