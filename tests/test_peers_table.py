"""benchmarks/_peers_table.py: the peers' table and its bold cells from fake figures (no sockets, no processes)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from _peers_table import DASH, ROWS, build, summarise  # noqa: E402

COLUMNS = [("raw", "raw pyzmq"), ("mesh", "mesh"), ("pyro", "Pyro5"), ("ray", "Ray")]
PARAMS = {"agents": 5, "sleep": 5.0, "mb": 10, "fanout": 200}


def test_summarise_takes_the_median_of_each_key_and_skips_failed_runs() -> None:
    runs = [{"median_us": 100.0, "p99_us": 300.0}, {"error": "boom"}, {"median_us": 200.0, "p99_us": 100.0},
            {"median_us": 150.0, "p99_us": 200.0}]
    assert summarise(runs, ("median_us", "p99_us")) == {"median_us": 150.0, "p99_us": 200.0}
    assert summarise([{"error": "boom"}], ("ms",)) == "boom"
    assert summarise([{"na": "no futures"}], ("ms",)) == "no futures"
    assert summarise(None, ("ms",)) is None


def test_mesh_cell_is_bold_only_where_a_peer_beats_it_and_raw_does_not_count() -> None:
    figures = {
        "raw": {"sync": [{"median_us": 50.0, "p99_us": 60.0}], "bulk": [{"ms": 1.0}]},
        "mesh": {"sync": [{"median_us": 100.0, "p99_us": 200.0}], "bulk": [{"ms": 10.0}],
                 "async": [{"one_per_s": 20000.0, "four_per_s": 30000.0}]},
        "pyro": {"sync": [{"median_us": 150.0, "p99_us": 150.0}], "future": [{"na": "no futures"}],
                 "async": [{"one_per_s": 5500.0, "four_per_s": 40000.0}]},
        "ray": {"bulk": [{"ms": 8.0}, {"ms": 9.0}]},
    }
    out = build(figures, COLUMNS, PARAMS)
    rows = {r["row"]: r for r in out["rows"]}
    assert [r["row"] for r in out["rows"]] == list(ROWS)
    assert rows["sync"]["cells"]["mesh"] == "**100 / 200**"  # Pyro5's p99 is lower: beaten on one figure
    assert rows["sync"]["beaten_by"] == ["Pyro5"]
    assert rows["bulk"]["cells"] == {"raw": "1.0", "mesh": "**10.0**", "pyro": DASH, "ray": "8.5"}
    assert rows["async"]["cells"]["mesh"] == "**20.0k / 30.0k**"  # higher is better: 40k beats 30k
    assert rows["future"]["cells"]["pyro"] == DASH and rows["child"]["cells"]["mesh"] == DASH
    assert out["mesh_behind"] == ["sync", "async", "bulk"] and out["mesh_leads"] == []
    assert "Pyro5 future: no futures" in out["not_measured"]
    assert rows["demo"]["label"] == "5 × 5 s demo distributed (s)"
    assert out["markdown"].splitlines()[0] == "| # | row | raw pyzmq | mesh | Pyro5 | Ray |"


def test_mesh_leads_a_row_only_when_a_peer_was_measured_on_it() -> None:
    figures = {"mesh": {"pss": [{"pss_mib": 16.0}], "running": [{"init_s": 0.001}]},
               "pyro": {"pss": [{"pss_mib": 17.0}]}, "ray": {"pss": [{"pss_mib": 8470.0}]}}
    out = build(figures, COLUMNS, PARAMS)
    assert out["mesh_leads"] == ["pss"]  # "running" has no peer figure: neither led nor behind
    rows = {r["row"]: r for r in out["rows"]}
    assert rows["pss"]["cells"] == {"raw": DASH, "mesh": "16.0", "pyro": "17.0", "ray": "8470.0"}
