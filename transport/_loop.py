"""The I/O thread: commands from other threads, a poller with one handler per socket, timers.

ZeroMQ sockets are not thread-safe, so one thread owns them all. Other threads
hand it :class:`Command` objects through a queue and wake it with a byte on a
pipe (written only when the thread is not already awake). Each turn of the
loop: poll, run the handler of every ready socket, run the queued commands,
run what is due (one-shot :meth:`Loop.call_at` entries, then periodic timers).

The loop knows nothing of peers or routers: :mod:`transport._dealers` and
:mod:`transport._routers` register their sockets and commands with it. A monitor socket is polled through an epoll set
(:mod:`transport._edge`), itself one item of the poll.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import os
import queue
import threading
import time
from typing import Any, Callable

import zmq

from transport._edge import Edge, edge_on
from transport._log import log

__all__ = ["Call", "Command", "Loop"]

Handler = Callable[[int], None]  # called with the poll mask of its socket
_poll = zmq.zmq_poll
_monotonic = time.monotonic
_INF = float("inf")


class Command:
    """Work for the I/O thread, submitted from any thread."""

    __slots__ = ()

    def run(self) -> None:
        """Do it (on the I/O thread)."""

    def failed(self, exc: Exception) -> None:
        """:meth:`run` raised ``exc`` (already logged): fail whoever waits on it."""

    def abort(self, exc: Exception) -> None:
        """The loop stopped before running it: fail whoever waits on it with ``exc``."""


class Call(Command):
    """Run ``fn(*args)`` on the I/O thread."""

    __slots__ = ("fn", "args")

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.fn = fn
        self.args = args

    def run(self) -> None:
        self.fn(*self.args)


class _Stop(Command):
    __slots__ = ()


_STOP = _Stop()


class Loop:
    """One I/O thread. ``teardown`` runs on it when it stops (close the sockets, then :meth:`abort_queued`)."""

    def __init__(self, teardown: Callable[[], None], name: str = "mesh-io") -> None:
        self._teardown = teardown
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._woken = False
        self._dead = False
        self._wake_lock = threading.Lock()
        self._poller = zmq.Poller()
        self._poller.register(self._wake_r, zmq.POLLIN)
        self._handlers: dict[Any, Handler] = {}
        self._edge = Edge() if edge_on() else None  # the edge-triggered sockets (transport._edge)
        self._edge_fd = -1
        if self._edge is not None:
            self._edge_fd = self._edge.fd
            self._poller.register(self._edge_fd, zmq.POLLIN)
        self._due: list[tuple[float, int, Callable[[Any], None], Any]] = []  # heap of call_at entries
        self._seq = itertools.count()
        self.timers: list[list] = []  # [next_due, interval, fn]: added by add_timer
        self._timers_next = _INF  # the earliest next_due of the timers
        # the earliest of _timers_next and the first call_at entry: never later than either (it is
        # lowered when one is added, recomputed after what is due ran), so a turn reads it alone
        self._next_at = _INF
        self.flushers: list[Callable[[], None]] = []  # run at the end of each turn (send what was staged)
        self.ident = 0
        self._stopped = False  # a stop was read: the thread running the loop leaves it
        # an asyncio loop run by the I/O thread (transport._hosted.Host), and whether the thread is
        # in one of its steps (not in a turn: then replies go through submit, see Router.reply)
        self.host: Any = None
        self.stepping = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = threading.Event()

    def start(self) -> None:
        self.thread.start()
        self._started.wait()

    def on_thread(self) -> bool:
        return threading.get_ident() == self.ident

    def hand_off(self, ident: int) -> bool:
        """A handler running on I/O thread ``ident`` must wait (or runs long): a new thread takes
        the loop over, and ``ident`` leaves it once its handler returns (it touches no socket
        after that: what it sends goes through :meth:`submit`). Thread-safe; False if ``ident``
        is no longer the I/O thread (handed off already) or the loop ended.

        The caller guarantees that thread ``ident`` is inside a handler and stays there until
        this returns (no socket of the loop is in use by it meanwhile).
        """
        with self._wake_lock:
            if self._dead or self.ident != ident:
                return False
            started = threading.Event()
            thread = threading.Thread(target=self._run, args=(started,), name=self.thread.name, daemon=True)
            self.thread = thread
            thread.start()
        started.wait()
        return True

    # ------------------------------------------------------------ any thread
    def submit(self, cmd: Command) -> None:
        """Queue ``cmd`` for the I/O thread and wake it."""
        self._queue.put(cmd)
        if not self._woken:
            self._woken = True
            with self._wake_lock:
                if self._dead:
                    return
                try:
                    os.write(self._wake_w, b"x")
                except OSError:  # pipe full: the thread is awake anyway
                    pass

    def stop(self) -> None:
        self.submit(_STOP)

    # ------------------------------------------------------- the I/O thread
    def add(self, sock: zmq.Socket, handler: Handler, flags: int = zmq.POLLIN) -> None:
        """Poll ``sock``; ``handler(mask)`` runs when it is ready."""
        self._handlers[sock] = handler
        if self._edge is None or not self._edge.add(sock, flags):
            self._poller.register(sock, flags)

    def modify(self, sock: zmq.Socket, flags: int) -> None:
        """Change what ``sock`` is polled for (e.g. POLLOUT while an outbox waits)."""
        if self._edge is not None and self._edge.socks:
            self._edge.remove(sock)  # (not for a monitor: if it is, it is polled as any other from now)
        self._poller.register(sock, flags)

    def remove(self, sock: zmq.Socket) -> None:
        if self._handlers.pop(sock, None) is not None:
            if self._edge is not None and self._edge.socks and self._edge.remove(sock):
                return
            try:
                self._poller.unregister(sock)
            except KeyError:
                pass

    def call_at(self, when: float, fn: Callable[[Any], None], arg: Any = None) -> None:
        """Run ``fn(arg)`` once, at monotonic time ``when`` (it checks whether it is still wanted)."""
        heapq.heappush(self._due, (when, next(self._seq), fn, arg))
        if when < self._next_at:
            self._next_at = when

    def abort_queued(self, exc: Exception) -> None:
        """Fail every command still queued (during teardown)."""
        while True:
            try:
                cmd = self._queue.get_nowait()
            except queue.Empty:
                return
            try:
                cmd.abort(exc)
            except Exception:
                log.exception("aborting an I/O command failed")

    def _run(self, started: threading.Event | None = None) -> None:
        me = self.ident = threading.get_ident()
        (started or self._started).set()
        try:
            self._loop()
        except Exception:  # pragma: no cover - a bug; keep the process alive
            log.exception("mesh I/O thread crashed")
        finally:
            if self.ident == me:  # a thread that handed the loop off leaves the teardown to its successor
                try:
                    self._teardown()
                finally:
                    with self._wake_lock:
                        self._dead = True
                        os.close(self._wake_r)
                        os.close(self._wake_w)
                        if self._edge is not None:
                            self._edge.close()

    def _loop(self) -> None:
        me = self.ident
        self._woken = False  # a successor (hand_off): its predecessor left without clearing it
        if self._drain():
            return
        while True:
            host = self.host
            if host is not None and not host.started:  # an asyncio loop to run here (transport._hosted)
                host.run(me)  # its selector runs the turns until it stops (or this thread leaves the I/O loop)
            else:
                self.turn(me)
            if self.ident != me or self._stopped:
                return

    def turn(self, me: int, extra: list | None = None, timeout: int | None = None) -> list:
        """One turn on I/O thread ``me``: send what was staged, poll (the sockets, the wake pipe and
        ``extra``, ``(fd, flags)`` pairs of a hosted asyncio loop), run the handlers of what is ready,
        the queued commands, what is due. ``timeout`` (ms) shortens the poll. Returns the events of
        ``extra``; afterwards the thread leaves the loop if :attr:`ident` is no longer ``me`` (handed
        off) or the loop stopped."""
        try:  # before the thread may sleep: what this turn staged goes out now (Loop._flush, inlined)
            for fn in self.flushers:
                fn()
        except Exception:
            self._flush()  # one failed: log it, run each (a flusher sends what is staged: again is harmless)
        nxt = self._next_at
        if nxt == _INF:
            wait = 1000
        else:
            wait = int((nxt - _monotonic()) * 1000) + 1
            if wait < 0:
                wait = 0
            elif wait > 1000:
                wait = 1000
        if timeout is not None and timeout < wait:
            wait = timeout
        edge = self._edge
        if edge is not None and edge.ready:  # an edge-triggered socket still readable: no wait
            wait = 0
        try:
            # Poller.poll, without its wrapper
            events = _poll(self._poller.sockets + extra if extra else self._poller.sockets, wait)
        except zmq.ZMQError as exc:
            if exc.errno == errno.EINTR:
                return []
            raise
        handlers, wake_r = self._handlers, self._wake_r
        out: list = []
        run_edge = edge is not None and bool(edge.ready)
        for target, mask in events:
            if target == wake_r:
                try:
                    os.read(wake_r, 4096)
                except BlockingIOError:
                    pass
                continue
            if target == self._edge_fd:
                run_edge = True
                continue
            handler = handlers.get(target)
            if handler is None:
                if extra is not None and type(target) is int:
                    out.append((target, mask))
                continue
            if self.ident != me:  # an earlier handler handed the loop off: the new thread polls again
                continue
            try:
                handler(mask)
            except Exception:
                log.exception("error handling socket event")
        if run_edge and self.ident == me:
            edge.run(handlers, lambda: self.ident, me, lambda socks: self.submit(Call(edge.ready.extend, socks)))  # type: ignore[union-attr]
        if self.ident != me:
            return out
        self._woken = False
        if not self._queue.empty() and self._drain():
            return out
        if self._next_at != _INF:
            now = _monotonic()
            if self._next_at <= now:
                self._run_scheduled(me, now)
        return out

    def _run_scheduled(self, me: int, now: float) -> None:
        """Run what is due at ``now`` (call_at entries, then timers) and note the next time."""
        due = self._due
        if due and due[0][0] <= now:
            self._run_due(now)
            if self.ident != me:  # handed off by a due callback: the successor's _next_at is early, never late
                return
        if self.timers and self._timers_next <= now:
            self._run_timers(now)
        nxt = self._timers_next if self.timers else _INF
        if due and due[0][0] < nxt:
            nxt = due[0][0]
        self._next_at = nxt

    def _drain(self) -> bool:
        """Run the queued commands; True when this thread must leave the loop (stopped, or a
        command's handler handed the loop to another thread: it must not run one more)."""
        q = self._queue
        if q.empty():  # the common turn: no exception raised and caught to learn it
            return False
        me = self.ident
        while True:
            try:
                cmd = q.get_nowait()
            except queue.Empty:
                return False
            if cmd is _STOP:
                self._stopped = True
                self._flush()  # what was staged before the stop still goes (last calls, bye)
                return True
            try:
                cmd.run()
            except Exception as exc:
                log.exception("error in I/O command %s", type(cmd).__name__)
                cmd.failed(exc)
            if self.ident != me:  # handed off (a request handler run by this command waited)
                return True

    def _flush(self) -> None:
        for fn in self.flushers:
            try:
                fn()
            except Exception:
                log.exception("I/O flush failed")

    def add_timer(self, entry: list) -> None:
        """Add ``[next_due, interval, fn]`` to :attr:`timers` (the I/O thread)."""
        self.timers.append(entry)
        if entry[0] < self._timers_next:
            self._timers_next = entry[0]
        if entry[0] < self._next_at:
            self._next_at = entry[0]

    def _run_due(self, now: float) -> None:
        due = self._due
        me = self.ident
        while due and due[0][0] <= now:
            _, _, fn, arg = heapq.heappop(due)
            try:
                fn(arg)
            except Exception:
                log.exception("scheduled I/O callback failed")
            if self.ident != me:  # the callback handed the loop off (an inline call that waited): its successor runs the rest
                return

    def _run_timers(self, now: float) -> None:
        for timer in list(self.timers):
            if timer[0] <= now:
                timer[0] = now + timer[1]
                try:
                    timer[2]()
                except Exception:
                    log.exception("timer callback failed")
        self._timers_next = min((t[0] for t in self.timers), default=_INF)
