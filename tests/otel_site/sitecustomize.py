"""Configures OpenTelemetry's SDK in a test's server subprocess (tests/test_tracing*.py).

Active only when ``MESH_TEST_SPANS`` names a file: every ended span is appended to it as one
JSON line (name, kind, ids, parent, status, attributes), so the test can collect the spans of
every process of a chain. Put this folder on ``PYTHONPATH`` of the subprocess.
"""

import os

if os.environ.get("MESH_TEST_SPANS"):
    import json
    import threading

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class _FileExporter(SpanExporter):
        def __init__(self, path):
            self.path = path
            self.lock = threading.Lock()

        def export(self, spans):
            lines = []
            for s in spans:
                lines.append(json.dumps({
                    "pid": os.getpid(),
                    "name": s.name,
                    "kind": s.kind.name,
                    "trace_id": format(s.context.trace_id, "032x"),
                    "span_id": format(s.context.span_id, "016x"),
                    "parent": format(s.parent.span_id, "016x") if s.parent is not None else None,
                    "status": s.status.status_code.name,
                    "attributes": dict(s.attributes or {}),
                }))
            with self.lock, open(self.path, "a", encoding="utf-8") as fh:
                fh.write("".join(line + "\n" for line in lines))
            return SpanExportResult.SUCCESS

    _provider = TracerProvider()
    _provider.add_span_processor(SimpleSpanProcessor(_FileExporter(os.environ["MESH_TEST_SPANS"])))
    trace.set_tracer_provider(_provider)
