"""Discovery of agent servers: mDNS (zeroconf), a local registry, static peers and Redis.

An :class:`Advertiser` announces one server; a :class:`Browser` merges what every
source found into one :class:`ServerRecord` per server. Records are hints only:
whether a server still answers is for the caller to check (the mesh pings it).

This package knows nothing of RPC: it never imports ``mesh`` or ``transport``,
and imports ``redis`` only when a Redis URL is given.

Example::

    with Advertiser("worker-1", "127.0.0.1", 5555, capacity=8):
        with Browser() as browser:
            print(browser.wait(2.0))
"""

from discovery._advertiser import Advertiser
from discovery._browser import Browser
from discovery._record import SERVICE_TYPE, ServerRecord, parse_address

__all__ = ["SERVICE_TYPE", "Advertiser", "Browser", "ServerRecord", "parse_address"]
