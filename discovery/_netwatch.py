"""Notice a network link coming up or an address appearing (Linux rtnetlink; elsewhere a no-op).

mDNS has no memory across a partition: a service announced while its host was
cut off is never heard by browsers that already finished their startup queries
(python-zeroconf queries at about 0.1, 1, 5 and 14 s, then only to refresh
known records). So the advertiser re-announces, and the browser re-queries,
when a link comes back. The kernel tells us through a ``NETLINK_ROUTE`` socket
(a local kernel channel, no network traffic).
"""

from __future__ import annotations

import logging
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable

__all__ = ["NetWatch"]

log = logging.getLogger(__name__)

# rtnetlink constants (linux/rtnetlink.h, linux/if.h): kernel ABI values
_RTMGRP_LINK = 0x1
_RTMGRP_IPV4_IFADDR = 0x10
_RTMGRP_IPV6_IFADDR = 0x100
_RTM_NEWLINK = 16
_RTM_NEWADDR = 20
_IFF_UP = 0x1
_IFF_RUNNING = 0x40
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change


class NetWatch:
    """Call ``callback()`` from a background thread after links come up or addresses are added.

    Bursts of kernel events are coalesced: the callback runs ``debounce`` seconds
    after the last of them. It must not raise (exceptions are logged).

    Args:
        callback: what to run.
        name: thread name suffix, for debugging.
        debounce: seconds of quiet before calling back.
    """

    def __init__(self, callback: Callable[[], None], name: str = "", debounce: float = 0.25) -> None:
        self._callback = callback
        self._name = name
        self._debounce = debounce
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None

    def start(self) -> bool:
        """Start watching; False when rtnetlink is unavailable (not Linux, or refused)."""
        if not hasattr(socket, "AF_NETLINK"):
            return False
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            sock.bind((0, _RTMGRP_LINK | _RTMGRP_IPV4_IFADDR | _RTMGRP_IPV6_IFADDR))
            sock.setblocking(False)
        except OSError as exc:
            log.debug("cannot watch network links: %s", exc)
            return False
        self._sock = sock
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name=f"discovery-netwatch-{self._name}", daemon=True)
        self._thread.start()
        return True

    @staticmethod
    def _interesting(data: bytes) -> bool:
        offset = 0
        while offset + _NLMSGHDR.size <= len(data):
            length, mtype, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
            if length < _NLMSGHDR.size:
                break
            body = offset + _NLMSGHDR.size
            if mtype == _RTM_NEWADDR:
                return True
            if mtype == _RTM_NEWLINK and body + _IFINFOMSG.size <= len(data):
                _fam, _typ, _index, flags, _change = _IFINFOMSG.unpack_from(data, body)
                if flags & _IFF_UP and flags & _IFF_RUNNING:
                    return True
            offset += (length + 3) & ~3
        return False

    def _run(self) -> None:
        assert self._sock is not None and self._wake_r is not None
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ, "netlink")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        due: float | None = None
        try:
            while True:
                timeout = None if due is None else max(0.0, due - time.monotonic())
                events = sel.select(timeout)
                for key, _ in events:
                    if key.data == "wake":
                        return
                    try:
                        while True:
                            if self._interesting(self._sock.recv(65536)):
                                due = time.monotonic() + self._debounce
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError as exc:  # ENOBUFS: we missed events; treat as a change
                        log.debug("netlink: %s", exc)
                        due = time.monotonic() + self._debounce
                if due is not None and time.monotonic() >= due:
                    due = None
                    try:
                        self._callback()
                    except Exception:  # pragma: no cover - a bug in the callback must not end the watch
                        log.exception("network change handler failed")
        finally:
            sel.close()

    def close(self) -> None:
        """Stop watching and join the thread. Idempotent."""
        thread, self._thread = self._thread, None
        if thread is not None and self._wake_w is not None:
            self._wake_w.send(b"x")
            thread.join()
        for s in (self._sock, self._wake_r, self._wake_w):
            if s is not None:
                s.close()
        self._sock = self._wake_r = self._wake_w = None
