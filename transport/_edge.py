"""Edge-triggered sockets of the I/O loop: an epoll set of ``ZMQ_FD``s, one item of the loop's poll.

A socket marked with :func:`edge_triggered` (a monitor: nothing but its handler reads it, nothing
sends on it) is not in the loop's ``zmq_poll`` set, whose cost grows with every socket (each one a
``ZMQ_EVENTS`` read, a ``poll`` and a ``getpid``, twice per blocking turn): its FD is in an epoll
set, so an idle one costs a turn nothing (a client's loop has two monitors per server).
``MESH_LOOP_EPOLL=0``: every socket in the ``zmq_poll`` set, as before.

``ZMQ_FD`` only says that the socket's state may have changed, and any operation on the socket can
take that signal, so :meth:`Edge.run` reads ``ZMQ_EVENTS`` before and after the handler (the read
after re-arms the FD); a socket still readable then runs again in the next turn, which does not
wait. Another thread or handler using the socket could lose a wake-up: hence the mark.
"""

from __future__ import annotations

import os
import select
import weakref
from typing import Any, Callable, cast

import zmq

from transport._log import log

__all__ = ["Edge", "edge_on", "edge_triggered"]

_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_EDGE_ON = hasattr(select, "epoll") and os.environ.get("MESH_LOOP_EPOLL", "1") != "0"
_marked: weakref.WeakSet = weakref.WeakSet()


def edge_triggered(sock: zmq.Socket) -> zmq.Socket:
    """Mark ``sock`` as read only by the handler a loop runs for it, never sent on nor read
    elsewhere (a monitor socket); returns it."""
    _marked.add(sock)
    return sock


def edge_on() -> bool:
    return _EDGE_ON


class Edge:
    """The edge-triggered sockets of one loop (used on its I/O thread only)."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.fd = self.epoll.fileno()
        self.socks: dict[int, zmq.Socket] = {}  # by ZMQ_FD
        self.ready: list[zmq.Socket] = []  # still readable after their handler: run next turn, no wait

    def add(self, sock: zmq.Socket, flags: int) -> bool:
        """Watch ``sock`` if it is marked and polled for input alone; False: poll it as any other."""
        if flags != _POLLIN or sock not in _marked:
            return False
        fd = sock.FD
        self.socks[fd] = sock
        try:
            self.epoll.register(fd, select.EPOLLIN)
        except FileExistsError:  # a closed socket's FD, reused (it was not removed)
            self.epoll.modify(fd, select.EPOLLIN)
        self.ready.append(sock)  # what it holds already came before the FD was watched
        return True

    def remove(self, sock: zmq.Socket) -> bool:
        """Stop watching ``sock``; False if it was not watched."""
        for fd, s in self.socks.items():
            if s is sock:
                del self.socks[fd]
                try:
                    self.epoll.unregister(fd)
                except (OSError, ValueError):  # closed already (the epoll set dropped it)
                    pass
                if sock in self.ready:
                    self.ready.remove(sock)
                return True
        return False

    def run(
        self,
        handlers: dict[Any, Callable[[int], None]],
        ident: Callable[[], int],
        me: int,
        resubmit: Callable[[list], None],
    ) -> None:
        """Run the handlers of the sockets whose FD fired or that were still readable after their
        handler last ran (thread ``me``); note those still readable now. ``ident()`` is the I/O
        thread now: after a hand-off, ``resubmit(socks)`` gives the rest to the successor."""
        ready = self.ready
        todo = ready[:]
        ready.clear()
        socks = self.socks
        for fd, _ in self.epoll.poll(0):
            sock = socks.get(fd)
            if sock is not None and sock not in todo:
                todo.append(sock)
        for i, sock in enumerate(todo):
            handler = handlers.get(sock)
            if handler is None:
                continue
            try:
                if cast(int, sock.getsockopt(_EVENTS)) & _POLLIN:
                    handler(_POLLIN)
                    if ident() != me:  # handed off: the successor looks at this one and the rest
                        resubmit(todo[i:])
                        return
                    if handlers.get(sock) is handler and cast(int, sock.getsockopt(_EVENTS)) & _POLLIN:
                        ready.append(sock)  # (the read re-armed the FD either way)
            except zmq.ZMQError:  # closed meanwhile without remove: forget it
                self.remove(sock)
            except Exception:
                log.exception("error handling socket event")

    def close(self) -> None:
        self.epoll.close()
