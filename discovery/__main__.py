"""Command line: watch what discovery sees, or advertise a (pretend) server.

``python -m discovery browse [--json] [--once --timeout S]``
    Prints the server table whenever it changes (``--json``: one JSON object per
    line, ``{"t": <monotonic time>, "since_start": <seconds since the browser
    started>, "servers": [...]}``), until SIGTERM/SIGINT,
    or stdin reaching end of file with ``--stdin-eof``.

``python -m discovery advertise NAME HOST PORT [--capacity N] [--auth] [--no-probe]``
    Advertises until SIGTERM/SIGINT (or stdin EOF with ``--stdin-eof``), then
    withdraws. With ``--json`` it reports ``started``, ``registered``,
    ``announced`` and ``closed`` events, each with the monotonic time, one JSON object per line.

Both print only to stdout and never open a socket other than zeroconf's (and
Redis's, when ``--redis-url`` is given). Meant for debugging and for tests.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from discovery._advertiser import Advertiser
from discovery._browser import Browser
from discovery._record import ServerRecord

__all__ = ["main"]


def record_json(rec: ServerRecord) -> dict[str, Any]:
    """A record as a JSON-ready dict (with ``address`` and sorted ``sources``)."""
    return {
        "name": rec.name,
        "address": rec.address,
        "host": rec.host,
        "port": rec.port,
        "capacity": rec.capacity,
        "auth": rec.auth,
        "py": rec.py,
        "proto": rec.proto,
        "pid": rec.pid,
        "addresses": list(rec.addresses),
        "sources": sorted(rec.sources),
    }


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _stop_event(stdin_eof: bool) -> threading.Event:
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if stdin_eof:

        def watch() -> None:
            try:  # os.read, not sys.stdin: a daemon thread must not hold the buffer lock at exit
                while os.read(0, 65536):
                    pass
            except OSError:
                pass
            stop.set()

        threading.Thread(target=watch, name="discovery-stdin", daemon=True).start()
    return stop


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="JSON lines on stdout")
    p.add_argument("--service-type", default=None)
    p.add_argument("--interfaces", default=None, help="comma separated addresses or interface names")
    p.add_argument("--ip-version", default="v4", choices=["v4", "v6", "all"])
    p.add_argument("--no-mdns", action="store_true")
    p.add_argument("--no-local", action="store_true")
    p.add_argument("--redis-url", default=None)
    p.add_argument("--stdin-eof", action="store_true", help="stop when stdin reaches end of file")
    p.add_argument("-v", "--verbose", action="store_true", help="log discovery's debug messages to stderr")


def _interfaces(text: str | None) -> list[str] | None:
    return [p for p in text.split(",") if p] if text else None


def _table(found: list[ServerRecord]) -> str:
    rows = [f"{r.name:<32} {r.address:<28} cap={r.capacity:<4} {','.join(sorted(r.sources))}" for r in found]
    return "\n".join(rows) if rows else "(no servers)"


def _browse(args: argparse.Namespace) -> int:
    stop = _stop_event(args.stdin_eof)
    browser = Browser(
        mdns=not args.no_mdns,
        local=not args.no_local,
        static_peers=args.peers.split(",") if args.peers else None,
        redis_url=args.redis_url,
        interfaces=_interfaces(args.interfaces),
        ip_version=args.ip_version,
        service_type=args.service_type,
    )

    t0 = time.monotonic()

    def show(found: list[ServerRecord]) -> None:
        if args.json:
            now = time.monotonic()
            _emit({"t": now, "since_start": now - t0, "servers": [record_json(r) for r in found]})
        else:
            print(_table(found), flush=True)

    with browser:
        if args.once:
            show(browser.wait(args.timeout, lambda found: False) if args.timeout > 0 else browser.servers())
            return 0
        last: list[ServerRecord] | None = None

        def changed(found: list[ServerRecord]) -> bool:
            return found != last

        while not stop.is_set():
            found = browser.wait(0.2, changed)
            if found != last:
                show(found)
                last = found
    return 0


def _advertise(args: argparse.Namespace) -> int:
    stop = _stop_event(args.stdin_eof)
    adv = Advertiser(
        args.name,
        args.host,
        args.port,
        capacity=args.capacity,
        auth=args.auth,
        mdns=not args.no_mdns,
        local=not args.no_local,
        redis_url=args.redis_url,
        interfaces=_interfaces(args.interfaces),
        ip_version=args.ip_version,
        service_type=args.service_type,
        probe=not args.no_probe,
    )
    t0 = time.monotonic()
    adv.start()
    if args.json:
        _emit({"event": "started", "t": t0, "name": adv.name, "address": adv.record.address})
    else:
        print(f"advertising {adv.name} at {adv.record.address}", flush=True)
    reporter = None
    if not args.no_mdns:

        def report() -> None:  # wait_registered(None) returns on success, failure or close
            if not adv.wait_registered(None):
                return
            if args.json:
                _emit({"event": "registered", "t": time.monotonic(), "mdns_name": adv.mdns_name})
            else:
                print(f"registered over mDNS as {adv.mdns_name}", flush=True)
            if adv.wait_announced(None) and args.json:
                _emit({"event": "announced", "t": time.monotonic()})

        reporter = threading.Thread(target=report, name="discovery-report", daemon=True)
        reporter.start()
    stop.wait()
    adv.close()
    if reporter is not None:
        reporter.join()
    if args.json:
        _emit({"event": "closed", "t": time.monotonic()})
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m discovery``."""
    parser = argparse.ArgumentParser(prog="python -m discovery", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("browse", help="print the servers discovered")
    _common(b)
    b.add_argument("--peers", default=None, help="static peers, comma separated host:port")
    b.add_argument("--once", action="store_true", help="print once after --timeout and exit")
    b.add_argument("--timeout", type=float, default=1.0)
    a = sub.add_parser("advertise", help="advertise a server until stopped")
    _common(a)
    a.add_argument("name")
    a.add_argument("host")
    a.add_argument("port", type=int)
    a.add_argument("--capacity", type=int, default=0)
    a.add_argument("--auth", action="store_true")
    a.add_argument("--no-probe", action="store_true", help="announce at once, without probing the name (IPv4 on Linux: with the plain responder, not zeroconf)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    if args.verbose:
        logging.getLogger("discovery").setLevel(logging.DEBUG)
    return _browse(args) if args.cmd == "browse" else _advertise(args)


if __name__ == "__main__":
    sys.exit(main())
