"""bench/report: docs/benchmarks.md shows what the record holds, each figure with its runs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bench import record, report
from bench.figures import Figure


def run_rows(figures: list[Figure], minute: int) -> list[dict[str, Any]]:
    return record.rows(
        figures,
        {},
        mode="quick",
        now=datetime(2026, 12, 7, 10, minute, tzinfo=UTC),
        facts={"cpus": 2, "model": "test", "python": "3.11", "load_1m": 0.0},
        head=(f"{minute:02d}" * 20, False),
    )


def single(value: float, met: bool = True) -> Figure:
    return Figure("single", value, "req/s", "bare", 1000.0, "ratio >= 1.2x", met, group="ingest")


def cpu(value: float) -> Figure:
    return Figure(
        "cpu", value, "µs", "bare", 80.0, "ratio >= 1.2x less", False, invert=True, group="ingest"
    )


def test_the_page_shows_what_the_record_holds() -> None:
    """Recording runs without regenerating the page (or editing the page by hand) fails."""
    page = report.PAGE.read_text()
    assert report.page_with(report.section(record.load()), page) == page


def test_each_figure_is_the_median_of_its_last_three_runs_with_their_ids() -> None:
    rows: list[dict[str, Any]] = []
    for minute, value in enumerate([100.0, 900.0, 1300.0, 800.0], start=1):
        rows += run_rows([single(value, met=value >= 1200)], minute)
    rows += run_rows([single(0.0)], 5)  # measured nothing: not a run of the figure
    text = report.section(rows)
    [line] = [line for line in text.splitlines() if "| single |" in line]
    assert "| 900 req/s |" in line  # median of 900, 1300, 800: the first run is older
    assert "0.90x (0.80 to 1.30)" in line
    assert "| 1 of 3 |" in line
    assert "20261207T1002" in line and "20261207T1001" not in line
    assert "20261207T1005" not in line


def test_lower_is_better_figures_say_less() -> None:
    text = report.section(run_rows([cpu(100.0)], 1))
    [line] = [line for line in text.splitlines() if "| cpu |" in line]
    assert "0.80x less (one run)" in line


def test_a_page_without_its_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="marker"):
        report.page_with("x", "no markers here")
