"""``GET /metrics``: the server's counters in the Prometheus text format, read when scraped.

Nothing is counted here: a scrape reads the server's ``status`` (its per class and method call
counters, mailboxes, workers, result store and socket byte counts) and the edge's own request
counts, and turns them into metric families.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from mesh.server._stats import bucket_bounds

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_BOUNDS = [floatToGoString(b) for b in bucket_bounds()]


class _Collector:
    def __init__(self, status: Callable[[], dict[str, Any]], http: Callable[[], dict[int, int]]) -> None:
        self._status = status
        self._http = http

    def collect(self) -> Iterator[Metric]:
        st = self._status()
        cm = ["class", "method"]
        calls = CounterMetricFamily("mesh_calls", "Calls completed, by agent class and method", labels=cm)
        errors = CounterMetricFamily("mesh_call_errors", "Calls that failed, by class, method and error type",
                                     labels=[*cm, "error"])
        latency = HistogramMetricFamily("mesh_call_duration_seconds",
                                        "Time from a call's arrival to its reply (mailbox wait included)", labels=cm)
        for row in st.get("calls", ()):
            labels = [str(row["class"]), str(row["method"])]
            calls.add_metric(labels, row["calls"])
            for kind, n in row["errors"].items():
                errors.add_metric([*labels, str(kind)], n)
            cumulative, buckets = 0, []
            for bound, n in zip(_BOUNDS, row["hist"], strict=False):  # the last bucket is +Inf
                cumulative += n
                buckets.append((bound, cumulative))
            buckets.append(("+Inf", sum(row["hist"])))
            latency.add_metric(labels, buckets, sum_value=row["seconds"])
        yield from (calls, errors, latency)
        queue = GaugeMetricFamily("mesh_queue_depth", "Calls waiting in an agent's mailbox",
                                  labels=["class", "name", "id"])
        for a in st.get("agents", ()):
            queue.add_metric([str(a["class"]), str(a["name"]), str(a["id"])], a["queue"])
        yield queue
        for name, doc, value in (
            ("mesh_queued_calls", "Calls waiting in all mailboxes", st.get("queued", 0)),
            ("mesh_calls_in_flight", "Calls running now (worker threads and the event loop)",
             st.get("running", 0) + st.get("aio_running", 0)),
            ("mesh_load", "Worker tasks running or queued", st.get("load", 0)),
            ("mesh_capacity", "Worker threads running calls at once", st.get("capacity", 0)),
            ("mesh_agents", "Objects on the server", len(st.get("agents", ()))),
            ("mesh_results_held", "Async results held for their readers", st.get("results", 0)),
            ("mesh_results_bytes", "Bytes of the results held", st.get("results_bytes") or 0),
            ("mesh_rss_bytes", "Resident memory of the server process", st.get("rss", 0)),
            ("mesh_uptime_seconds", "Seconds since the server started", st.get("uptime", 0.0)),
        ):
            yield GaugeMetricFamily(name, doc, value=value)
        yield CounterMetricFamily("mesh_bytes_received", "Bytes of mesh requests received", value=st.get("bytes_in", 0))
        yield CounterMetricFamily("mesh_bytes_sent", "Bytes of mesh replies sent", value=st.get("bytes_out", 0))
        http = CounterMetricFamily("mesh_http_requests", "HTTP requests answered by the edge, by status code",
                                   labels=["code"])
        for code, n in sorted(self._http().items()):
            http.add_metric([str(code)], n)
        yield http


class Metrics:
    """The edge's registry: one collector that reads the server when scraped."""

    def __init__(self, status: Callable[[], dict[str, Any]], http: Callable[[], dict[int, int]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(status, http))

    def render(self) -> bytes:
        return generate_latest(self.registry)
