"""Cost of tracing: sync latency and async throughput with OpenTelemetry off, on with a no-op
exporter, and on with an in-memory exporter; raw pyzmq beside, in the same run.

    bin/isolated .venv/bin/python benchmarks/tracing.py [--calls 3000] [--reps 3] [--json PATH]

Each mode runs in a fresh client process whose server is another fresh process configured the
same way (OpenTelemetry's tracer provider is process-global):

* ``off``: OpenTelemetry never imported (the client process checks and reports it);
* ``off, API imported``: ``opentelemetry.trace`` imported (as a library such as autogen-core
  does) but no provider set;
* ``on, no-op exporter``: the SDK's ``TracerProvider`` with a ``SimpleSpanProcessor`` whose
  exporter drops every span (the cost of making the spans);
* ``on, in-memory exporter``: the same with the SDK's ``InMemorySpanExporter``.

Modes alternate over repetitions; medians are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import median, percentile, table, write_json  # noqa: E402
from _raw import RawClient, RawServer  # noqa: E402

MODES = ("off", "off, API imported", "on, no-op exporter", "on, in-memory exporter")


def configure(mode: str) -> object:
    """Set this process up for ``mode``; the in-memory exporter if any."""
    if mode == "off":
        return None
    from opentelemetry import trace

    if mode == "off, API imported":
        return None
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    class Drop(SpanExporter):
        def export(self, spans):  # noqa: ANN001, ANN201
            return SpanExportResult.SUCCESS

    exporter = InMemorySpanExporter() if mode == "on, in-memory exporter" else Drop()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


def serve(mode: str) -> None:
    """A mesh server configured for ``mode``: prints its port, serves until stdin closes."""
    configure(mode)
    import mesh

    srv = mesh.AgentServer(port=0, advertise=False, capacity=4).launch(in_subprocess=False)
    print(f"port {srv.port}", flush=True)
    while sys.stdin.read(4096):
        pass
    srv.shutdown()


def client(mode: str, calls: int) -> dict:
    """Measure ``mode`` against a server of the same mode; the figures as a dict."""
    exporter = configure(mode)
    import mesh
    from mesh import RpcMeta, async_func
    from mesh._core import tracing

    class Echo(metaclass=RpcMeta):
        def echo(self, s):  # noqa: ANN001, ANN201
            return s

        @async_func
        def aecho(self, s):  # noqa: ANN001, ANN201
            return s

    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "serve", mode],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline().split()[1])  # type: ignore[union-attr]
        mesh.init(discovery=False)
        e = Echo(to_dist={"host": "127.0.0.1", "port": port})
        for _ in range(300):
            e.echo("hello")
        lat = []
        for _ in range(calls):
            t = time.perf_counter()
            e.echo("hello")
            lat.append(time.perf_counter() - t)
        if exporter is not None and hasattr(exporter, "clear"):
            exporter.clear()
        t = time.perf_counter()
        futs = [e.aecho("hello") for _ in range(calls)]
        for f in futs:
            f.result()
        tput = calls / (time.perf_counter() - t)
        return {"p50": median(lat) * 1e6, "p99": percentile(lat, 99) * 1e6, "tput": tput,
                "tracing": tracing.enabled(), "otel_imported": any(m.startswith("opentelemetry") for m in sys.modules)}
    finally:
        mesh.shutdown()
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(15)


def raw(calls: int) -> dict:
    with RawServer() as srv:
        c = RawClient(srv.address)
        for _ in range(300):
            c.echo("hello")
        lat = []
        for _ in range(calls):
            t = time.perf_counter()
            c.echo("hello")
            lat.append(time.perf_counter() - t)
        t = time.perf_counter()
        c.pipelined(calls)
        tput = calls / (time.perf_counter() - t)
        c.close()
    return {"p50": median(lat) * 1e6, "p99": percentile(lat, 99) * 1e6, "tput": tput}


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "serve":
        serve(sys.argv[2])
        return 0
    if len(sys.argv) > 3 and sys.argv[1] == "client":
        print(json.dumps(client(sys.argv[2], int(sys.argv[3]))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {m: [] for m in ("raw pyzmq", *MODES)}
    for _ in range(args.reps):
        runs["raw pyzmq"].append(raw(args.calls))
        for mode in MODES:
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "client", mode, str(args.calls)],
                                 capture_output=True, text=True, timeout=600, check=True)
            runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows = []
    base = None
    for mode, rs in runs.items():
        row = {"mode": mode, "sync p50 us": median([r["p50"] for r in rs]), "sync p99 us": median([r["p99"] for r in rs]),
               "async calls/s": median([r["tput"] for r in rs])}
        if mode != "raw pyzmq":
            row["traced"] = rs[0]["tracing"]
            row["otel imported"] = rs[0]["otel_imported"]
            base = base or row
            row["p50 / off"] = row["sync p50 us"] / base["sync p50 us"]
            row["calls/s / off"] = row["async calls/s"] / base["async calls/s"]
        rows.append(row)
    # what the off path adds to a call: tracing.enabled() on each side, carrier() on the server
    from mesh._core import tracing

    assert "opentelemetry" not in sys.modules
    n = 1_000_000
    t = time.perf_counter()
    for _ in range(n):
        tracing.enabled()
    check_ns = (time.perf_counter() - t) / n * 1e9
    print(table(rows, ["mode", "sync p50 us", "sync p99 us", "async calls/s", "p50 / off", "calls/s / off",
                       "traced", "otel imported"]))
    print(f"\ntracing.enabled() with OpenTelemetry not imported: {check_ns:.0f} ns "
          f"(a call checks it twice, once per side, plus one header lookup on the server)")
    write_json(args.json, {"calls": args.calls, "reps": args.reps, "rows": rows, "enabled_check_ns": check_ns})
    return 0


if __name__ == "__main__":
    sys.exit(main())
