"""``zmq-agent-server``: run, list, inspect and stop agent servers.

Also ``python -m mesh.server``. An application of the whole library (``list`` and ``status`` are
client operations), so it sits at the top layer of ``mesh``; ``start``'s server flags are generated
from :class:`~mesh._core.options.ServerOptions`.
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

import transport
from mesh import _top as top
from mesh import _views as views
from mesh._api import init, shutdown
from mesh._core import wire
from mesh._core.address import normalize_address
from mesh._core.options import ServerOptions, check_host
from mesh._errors import MeshError, OutcomeUnknown
from mesh.server import AgentServer
from mesh.server._classes import AgentDirError
from mesh.server._gc import tune as tune_gc
from mesh.server._malloc import tune as tune_malloc
from mesh.server._launcher import read_parent_config, ready_info, ready_line, watch_parent

__all__ = ["MIN_SECRET_BYTES", "main"]


_COMMANDS = ("start", "list", "status", "stop", "top")
MIN_SECRET_BYTES = 16
"""A secret shorter than this gets a warning (``secrets.token_urlsafe(32)`` makes 43 bytes)."""




def _parser() -> argparse.ArgumentParser:
    p = views.Parser(  # subcommands' parsers are of its class too
        prog="zmq-agent-server", description="Agent servers of the ZeroMQ agent mesh.",
        epilog="AgentScope's `as_server start ...` command lines run as `zmq-agent-server start ...`.",
    )
    p.add_argument("--version", action=views.VersionAction)
    sub = p.add_subparsers(dest="command", required=True, metavar="{start,list,status,stop,top}")

    s = sub.add_parser("start", help="run an agent server in the foreground")
    ServerOptions.add_arguments(s)  # one flag per server option, generated
    s.add_argument("--secret-file", help=f"file holding the shared secret (else env MESH_SECRET); a warning if it is "
                                         f"readable by group or others or shorter than {MIN_SECRET_BYTES} bytes")
    s.add_argument("--interfaces", help="comma-separated IPs to advertise on (else env MESH_INTERFACES, else what --host binds)")
    s.add_argument("--processes", type=int, default=1, help="server processes to run (ports PORT, PORT+1, ...; default 1)")
    s.add_argument(
        "--log-level", default="WARNING", type=str.upper, choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        help="logging level (default WARNING)",
    )
    s.add_argument("--json", action="store_true", help="print the ready line (one per process) as a JSON object")
    s.add_argument("--parent-stdin", action="store_true", help=argparse.SUPPRESS)
    compat = s.add_argument_group(
        "AgentScope's as_server flags",
        "accepted so that `as_server start ...` command lines run with only the command name changed",
    )
    compat.add_argument("--model-config-path", metavar="FILE",
                        help="accepted and ignored: the server loads no model configs (agents set up their own models)")
    compat.add_argument("--server-id", dest="name", default=argparse.SUPPRESS, metavar="ID", help="same as --name")
    compat.add_argument("--max-pool-size", dest="max_len", type=int, default=argparse.SUPPRESS, metavar="N",
                        help="same as --max-len")
    compat.add_argument("--local-mode", nargs="?", const="true", metavar="BOOL",
                        help="true: refuse any host but loopback (the default host is loopback anyway)")
    for flag, what in (("--studio-url", "URL"), ("--max-timeout-seconds", "S")):
        compat.add_argument(flag, metavar=what, dest="ignored_" + flag[2:].replace("-", "_"), help="accepted and ignored")
    for flag in ("--no-log", "--save-api-invoke", "--use-monitor"):
        compat.add_argument(flag, action="store_true", dest="ignored_" + flag[2:].replace("-", "_"), help="accepted and ignored")

    ls = sub.add_parser("list", help="the servers discovered now")
    ls.add_argument("--timeout", type=float, default=1.0, help="seconds to listen (default 1)")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.add_argument("--peers", help="also ask these servers: host:port,host:port (like env MESH_PEERS)")
    ls.add_argument("--redis-url", help="also read the Redis registry at this URL (like env MESH_REDIS_DISCOVERY_URL)")
    ls.add_argument("--secret-file", help="file holding the shared secret (else env MESH_SECRET)")

    st = sub.add_parser("status", help="one server's agents, load and uptime")
    st.add_argument("address", help="tcp://host:port or host:port")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer (default 5)")
    st.add_argument("--secret-file", help="file holding the shared secret (else env MESH_SECRET)")

    top.add_arguments(sub.add_parser("top", help="live view of servers: agents, queues, calls/s, errors, p99"))

    sp = sub.add_parser("stop", help="ask a server to shut down cleanly", epilog=(
        "Exit status: 0 once the server confirmed; 1 if it could not be asked (unreachable, no reply within "
        "--timeout, refused); 3 if the connection closed before its confirmation (it may or may not be stopping)."))
    sp.add_argument("address", help="tcp://host:port or host:port")
    sp.add_argument("--json", action="store_true", help="print the result as JSON")
    sp.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer (default 5)")
    sp.add_argument("--secret-file", help="file holding the shared secret (else env MESH_SECRET)")
    return p


def _check_command(p: argparse.ArgumentParser, argv: list[str]) -> None:
    """A missing or misspelt command gets a usage error that says which one was meant (exit 2)."""
    if not argv:
        p.error("a command is needed: start, list, status, stop or top (e.g. zmq-agent-server start --port 12001)")
    first = argv[0]
    if first in _COMMANDS or first in ("-h", "--help", "--version"):
        return
    if first.startswith("-"):
        p.error(f"the command is missing: did you mean start? (zmq-agent-server start {' '.join(argv)})")
    import difflib

    close = difflib.get_close_matches(first, _COMMANDS, n=1, cutoff=0.6)
    if close:
        p.error(f"unknown command {first!r}: did you mean {close[0]}?")
    p.error(f"unknown command {first!r}: use start, list, status, stop or top")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = _parser()
    _check_command(p, argv)
    args = p.parse_args(argv)
    if args.command == "start":
        return _start(args)
    if args.command == "list":
        return _list(args)
    if args.command == "status":
        return _status(args)
    if args.command == "top":
        return _top(args)
    return _stop(args)


def _warn(text: str) -> None:
    print(f"zmq-agent-server: warning: {text}", file=sys.stderr, flush=True)


def _read_secret(path: str) -> bytes:
    """Read ``--secret-file``, warning on stderr when others can read it or it is short.

    Raises:
        OSError, ValueError: it cannot be read, or it is empty.
    """
    import stat

    secret = transport.read_secret_file(path)
    try:
        mode = os.stat(path).st_mode
    except OSError:  # pragma: no cover  (it was just read)
        mode = 0
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        _warn(f"secret file {path} can be read by group or others (mode {stat.S_IMODE(mode):04o}): "
              f"run chmod 600 {path}")
    _check_secret_length(secret, f"secret file {path}")
    return secret


def _check_secret_length(secret: bytes | None, where: str) -> None:
    if secret and len(secret) < MIN_SECRET_BYTES:
        _warn(f"{where} holds only {len(secret)} bytes: use at least {MIN_SECRET_BYTES} random bytes, e.g. "
              "python -c \"import secrets; print(secrets.token_urlsafe(32))\"")


def _client_secret(args: argparse.Namespace) -> bool:
    """``--secret-file`` of list/status/stop: make the client use it. False (and says why) when unreadable."""
    if not getattr(args, "secret_file", None):
        return True
    try:
        secret = _read_secret(args.secret_file)
    except (OSError, ValueError) as exc:
        _fail(args, f"cannot read --secret-file: {exc}")
        return False
    init(secret=secret)
    return True


def _fail(args: argparse.Namespace, why: str, **extra: Any) -> None:
    """An error of list/status/stop: on stderr, and as JSON on stdout with ``--json``."""
    print(f"zmq-agent-server: {why}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"ok": False, "error": why, **extra}))


def _refuse(args: argparse.Namespace, why: str) -> None:
    """Say why the server does not start: on stderr, and to a parent process waiting for its line."""
    print(f"zmq-agent-server: {why}", file=sys.stderr)
    if getattr(args, "parent_stdin", False):
        print(f"zmq-agent-server: {why}", flush=True)
    elif getattr(args, "json", False):
        print(json.dumps({"event": "refused", "error": why}), flush=True)


def _truthy(text: str | None) -> bool:
    return str(text).strip().lower() in ("1", "true", "yes", "on")


def _start(args: argparse.Namespace) -> int:
    sys.modules["mesh"]._serving = True  # type: ignore[attr-defined]  # a server: agents' modules load no client side
    try:  # the address first: a bad one is reported as such, not as a missing secret
        args.host = check_host(args.host)
    except ValueError as exc:
        _refuse(args, f"--host: {exc}")
        return 2
    if args.interfaces:
        os.environ["MESH_INTERFACES"] = args.interfaces  # read by the advertiser
    if args.processes < 1:
        _refuse(args, f"--processes must be at least 1, got {args.processes}")
        return 2
    ignored = [f"--{k[len('ignored_'):].replace('_', '-')}" for k, v in vars(args).items() if k.startswith("ignored_") and v]
    if args.model_config_path:
        ignored.insert(0, "--model-config-path")
    if ignored and not args.parent_stdin:
        print(f"zmq-agent-server: note: ignoring AgentScope flag(s) {', '.join(ignored)} (see --help)", file=sys.stderr)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for entry in os.environ.get("MESH_SYS_PATH", "").split(os.pathsep):
        if entry and entry not in sys.path:
            sys.path.append(entry)
    classes: list[type] = []
    if args.parent_stdin:
        classes = read_parent_config()
    secret = None
    if args.secret_file:
        try:
            secret = _read_secret(args.secret_file)
        except (OSError, ValueError) as exc:
            _refuse(args, f"cannot read --secret-file: {exc}")
            return 2
    elif not args.parent_stdin:
        _check_secret_length(transport.secret_from_env(), "MESH_SECRET")
    if secret:
        init(secret=secret)  # outgoing fetches to other servers use it too
    try:
        server = AgentServer(**ServerOptions.from_args(
            args, custom_agent_classes=classes, secret=secret, local_mode=True if _truthy(args.local_mode) else None,
        ))
        server.launch(in_subprocess=False)
        tune_malloc()  # the server's own process: large values reuse freed memory; after start-up (mesh.server._malloc)
        tune_gc()  # this process is the server's own: fewer full collections of its many objects
    except (ValueError, AgentDirError, OSError) as exc:
        _refuse(args, str(exc))
        return 2
    except Exception as exc:  # e.g. zmq.ZMQError: address in use
        _refuse(args, f"cannot start: {exc}")
        return 2

    try:
        siblings = _start_siblings(args, server, classes, secret)
    except (RuntimeError, ValueError, OSError) as exc:
        server.shutdown()
        _refuse(args, f"cannot start --processes {args.processes}: {exc}")
        return 2
    return _serve(args, server, siblings)


def _serve(args: argparse.Namespace, server: Any, siblings: list[Any]) -> int:
    """Print the ready lines, serve until a signal, ``stop`` or the parent's exit; stop every process once."""

    def stop_all() -> None:
        stoppers = [threading.Thread(target=s.shutdown, daemon=True) for s in siblings]
        for t in stoppers:
            t.start()
        server.shutdown()
        for t in stoppers:
            t.join(args.grace + 10)

    signals = {"n": 0}

    def on_signal(signum: int, frame: Any) -> None:
        signals["n"] += 1
        if signals["n"] > 1:
            os._exit(130 if signum == signal.SIGINT else 0)
        threading.Thread(target=stop_all, name="mesh-signal-stop", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.parent_stdin:
        threading.Thread(target=watch_parent, args=(server,), name="mesh-parent-watch", daemon=True).start()
    for each in (server, *siblings):
        info = ready_info(each)
        print(json.dumps(info) if args.json else ready_line(info), flush=True)
    while not server._stopped.wait(0.5):  # wake up for signals
        pass
    stop_all()
    shutdown()
    return 0


def _start_siblings(args: argparse.Namespace, first: Any, classes: list[type], secret: bytes | None) -> list[Any]:
    """``--processes N``: N-1 more servers like the first, in subprocesses that die with this one."""
    siblings: list[Any] = []
    try:
        for i in range(1, max(1, args.processes)):
            sib = AgentServer(**ServerOptions.from_args(
                args, port=first.port + i if args.port else 0, custom_agent_classes=classes,
                http_port=args.http_port + i if args.http_port else args.http_port,
                name=f"{first.name}-{i}", secret=secret,
            ))
            siblings.append(sib.launch(in_subprocess=True))
    except BaseException:
        for sib in siblings:
            sib.shutdown()
        raise
    return siblings


def _admin(address: str, op: str, timeout: float) -> Any:
    from mesh.client._client import get_client  # the client side: not loaded by `start`
    from mesh.client._replies import decode_plain, wait

    addr = normalize_address(address)
    fut = get_client().request(addr, {"op": op}, None, timeout=timeout)
    try:
        return decode_plain(wait(fut, time.monotonic() + timeout, addr), addr)  # plain data: never unpickled
    finally:
        shutdown()


def _status(args: argparse.Namespace) -> int:
    if not _client_secret(args):
        return 1
    try:
        info = _admin(args.address, wire.STATUS, args.timeout)
    except (MeshError, ValueError) as exc:
        _fail(args, str(exc), address=args.address)
        return 1
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    try:
        lines = views.status_lines(info)
    except (KeyError, TypeError, ValueError) as exc:  # plain data, but not a status reply: not our server
        print(f"zmq-agent-server: {args.address}: malformed status reply ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def _top(args: argparse.Namespace) -> int:
    if not _client_secret(args):
        return 1
    try:
        return top.run(args.address, interval=args.interval, iterations=args.iterations, as_json=args.json,
                       timeout=args.timeout)
    finally:
        shutdown()


def _stop(args: argparse.Namespace) -> int:
    """Exit 0 once the server confirmed (it replies before it closes); 1 if the request failed; 3 if the
    connection closed after the request went out but before the reply (it may or may not be stopping)."""
    if not _client_secret(args):
        return 1
    try:
        _admin(args.address, wire.STOP, args.timeout)
    except OutcomeUnknown:
        _fail(args, f"{args.address}: the connection closed before the server confirmed the stop: it may or may "
                    f"not be stopping (see zmq-agent-server status {args.address})", address=args.address,
              confirmed=False)
        return 3
    except (MeshError, ValueError) as exc:
        _fail(args, str(exc), address=args.address)
        return 1
    if args.json:
        print(json.dumps({"ok": True, "address": normalize_address(args.address), "stopping": True}))
    else:
        print(f"asked {args.address} to stop")
    return 0


def _list(args: argparse.Namespace) -> int:
    if args.peers:
        os.environ["MESH_PEERS"] = ",".join(p for p in (os.environ.get("MESH_PEERS", ""), args.peers) if p)
    if args.redis_url:
        os.environ["MESH_REDIS_DISCOVERY_URL"] = args.redis_url
    if not _client_secret(args):
        return 1
    from mesh import _listing as listing  # the client side: not loaded by `start`
    from mesh.client._selection import survey

    try:
        found, failed = survey(timeout=args.timeout)
        reports = listing.fetch_reports(found, timeout=max(args.timeout, 2.0))  # e.g. an AutoGen host's types
    finally:
        shutdown()
    for rec, why in failed:
        print(f"zmq-agent-server: also announced, not usable from here: {rec.name} {rec.address}: {why}", file=sys.stderr)
    if args.json:
        print(json.dumps(listing.json_rows(found, reports), indent=2))
        return 0
    print("\n".join(listing.text_lines(found, reports)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
