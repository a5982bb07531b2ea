"""Discovery latency on a 3-host virtual LAN: how long until a browser on host 3 sees a server on host 1.

Scenarios (each repeated ``--runs`` times, a fresh server name per run):

- ``warm browser, probing``: a browser already runs on host 3; time from ``Advertiser.start()``
  on host 1 to the record in the browser's table. Dominated by mDNS probing (RFC 6762 §8.1).
- ``warm browser, no probing``: the same with ``probe=False`` (announces at once).
- ``cold browser``: the server is registered; a new browser starts on host 3; time from its
  ``start()`` to the record (one-shot query, answered by unicast).
- ``goodbye``: time from asking the server to stop to the record leaving the running browser.
- ``local registry``: same host, no multicast: ``Advertiser.start()`` to ``Browser.wait()`` returning.

Times on hosts 1 and 3 are compared on ``CLOCK_MONOTONIC``, which all network namespaces share.
It builds its own virtual LAN (tests/vlan.py), so run it inside an isolated namespace:

    /work/shared/tools/isolated .venv/bin/python benchmarks/discovery.py [--runs 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.join(ROOT, "tests")):
    if path not in sys.path:
        sys.path.insert(0, path)

from vlan import LineReader, VirtualLan, in_isolated_netns  # noqa: E402

from discovery import Advertiser, Browser  # noqa: E402


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.1f}" if isinstance(v, float) else str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


class Cli:
    """``python -m discovery ... --json`` on a virtual host."""

    def __init__(self, lan: VirtualLan, host: int, args: list[str], env: dict[str, str]) -> None:
        self.proc = lan.popen(host, [sys.executable, "-m", "discovery", *args, "--json", "--stdin-eof"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        self.out = LineReader(self.proc.stdout)

    def expect(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        return self.out.wait_for(lambda line: (lambda d: predicate(d) and d)(json.loads(line)), timeout)

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


def listed(name: str, present: bool = True) -> Any:
    return lambda d: "servers" in d and (name in {s["name"] for s in d["servers"]}) == present


def advertiser(lan: VirtualLan, env: dict[str, str], name: str, probe: bool) -> Cli:
    args = ["advertise", name, lan.host_ip(1), "7000"] + ([] if probe else ["--no-probe"])
    return Cli(lan, 1, args, env)


def lan_runs(runs: int) -> dict[str, list[float]]:
    env = dict(os.environ, PYTHONPATH=ROOT, XDG_RUNTIME_DIR=tempfile.mkdtemp(prefix="bench-disc-"),
               MESH_SERVICE_TYPE=f"_bd{uuid.uuid4().hex[:8]}._tcp.local.")
    env.pop("MESH_REGISTRY_DIR", None)
    env.pop("MESH_PEERS", None)
    out: dict[str, list[float]] = {k: [] for k in (
        "warm browser, probing", "warm browser, no probing", "cold browser", "goodbye")}
    with VirtualLan(n=3, prefix="bd") as lan:
        browser = Cli(lan, 3, ["browse"], env)
        browser.expect(lambda d: "servers" in d)
        for run in range(runs):
            for probe, key in ((True, "warm browser, probing"), (False, "warm browser, no probing")):
                name = f"b{run}{'p' if probe else 'n'}"
                adv = advertiser(lan, env, name, probe)
                started = adv.expect(lambda d: d.get("event") == "started")["t"]
                found = browser.expect(listed(name))["t"]
                out[key].append(found - started)
                if probe:
                    # A cold browser, once the server's announcements are over.
                    adv.expect(lambda d: d.get("event") == "announced")
                    cold = Cli(lan, 3, ["browse"], env)
                    out["cold browser"].append(cold.expect(listed(name))["since_start"])
                    cold.stop()
                t0 = time.monotonic()
                adv.stop()
                out["goodbye"].append(browser.expect(listed(name, present=False))["t"] - t0)
            print(f"run {run + 1}/{runs}: " + ", ".join(f"{k} {v[-1] * 1e3:.0f} ms" for k, v in out.items()),
                  flush=True)
        browser.stop()
    return out


def local_runs(runs: int) -> list[float]:
    times = []
    with tempfile.TemporaryDirectory() as registry:
        browser = Browser(mdns=False, static_peers=[], registry_dir=registry)
        for run in range(runs):
            t0 = time.monotonic()
            adv = Advertiser(f"l{run}", "127.0.0.1", 7100 + run, mdns=False, registry_dir=registry)
            adv.start()
            browser.wait(5, lambda found, n=f"l{run}": any(r.name == n for r in found))
            times.append(time.monotonic() - t0)
            adv.close()
        browser.close()
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="repetitions of each scenario (default 5)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if not in_isolated_netns():
        print("run inside an isolated network namespace: /work/shared/tools/isolated .venv/bin/python "
              "benchmarks/discovery.py", file=sys.stderr)
        return 2
    results = lan_runs(args.runs)
    results["local registry"] = local_runs(args.runs)
    rows = [{"scenario": k, "runs": len(v), "median_ms": statistics.median(v) * 1e3,
             "min_ms": min(v) * 1e3, "max_ms": max(v) * 1e3} for k, v in results.items()]
    print()
    print(table(rows, ["scenario", "runs", "median_ms", "min_ms", "max_ms"]))
    if args.json:
        import platform

        import zeroconf

        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump({
                "benchmark": "discovery", "runs": args.runs,
                "machine": {"python": platform.python_version(), "zeroconf": zeroconf.__version__,
                            "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M:%S")},
                "summary": rows, "samples_s": results,
            }, fh, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
