"""Discovery of agent servers: mDNS, a local registry, static peers and Redis.

An :class:`Advertiser` announces one server (over IPv4 without probing, with the plain
responder of :mod:`discovery._responder`; otherwise with python-zeroconf); a :class:`Browser`
(python-zeroconf) merges what every source found into one :class:`ServerRecord` per server. Records are hints only:
whether a server still answers is for the caller to check (the mesh pings it).

This package knows nothing of RPC: it never imports ``mesh`` or ``transport``,
and imports ``redis`` only when a Redis URL is given.

Example::

    with Advertiser("worker-1", "127.0.0.1", 5555, capacity=8):
        with Browser() as browser:
            print(browser.wait(2.0))
"""

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING, Any as _Any

from discovery._record import SERVICE_TYPE, ServerRecord, parse_address

# Imported on first use (PEP 562): the advertiser imports zeroconf (~60-170 ms), and a browser made
# with ``probe_first`` may never need it.
_LAZY = {"Advertiser": "discovery._advertiser", "Browser": "discovery._browser"}

if _TYPE_CHECKING:
    from discovery._advertiser import Advertiser
    from discovery._browser import Browser


def __getattr__(name: str) -> _Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'discovery' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["SERVICE_TYPE", "Advertiser", "Browser", "ServerRecord", "parse_address"]
