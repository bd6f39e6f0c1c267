"""bench/compare: a ratio that fell beyond its tolerance, or a figure that is not a
measurement, fails; noise within the tolerance and a faster run pass."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bench import record
from bench.compare import Verdict, compare, exit_code, main
from bench.figures import Figure

TOLERANCES = {"default": 0.2, "figures": {"ingest single-op": 0.1}}


def run_rows(
    ratios: dict[str, float],
    *,
    minute: int,
    mode: str = "quick",
    errors: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    figures = [
        Figure(name, 1000 * ratio, "req/s", "bare", 1000.0, "ratio >= 0.1x", True, group="g")
        for name, ratio in ratios.items()
    ]
    return record.rows(
        figures,
        errors or {},
        mode=mode,
        now=datetime(2026, 12, 6, 22, minute, tzinfo=UTC),
        facts={"cpus": 2, "model": "test", "python": "3.12", "load_1m": 0.0},
        head=("a" * 40, False),
    )


def verdicts(rows: list[dict[str, Any]]) -> dict[str, Verdict]:
    return {diff.figure: diff.verdict for diff in compare(rows, TOLERANCES)[1]}


@pytest.mark.parametrize(
    ("before", "after", "verdict"),
    [
        (0.80, 0.80, Verdict.OK),
        (0.80, 0.73, Verdict.OK),  # -8.75%: inside the figure's 10%
        (0.80, 0.71, Verdict.SLOWER),  # -11%
        (0.80, 0.90, Verdict.FASTER),
    ],
)
def test_a_ratio_is_judged_by_its_own_tolerance(
    before: float, after: float, verdict: Verdict
) -> None:
    rows = run_rows({"ingest single-op": before}, minute=1)
    rows += run_rows({"ingest single-op": after}, minute=2)
    assert verdicts(rows) == {"ingest single-op": verdict}


def test_other_figures_take_the_default_tolerance() -> None:
    rows = run_rows({"drain": 1.0}, minute=1) + run_rows({"drain": 0.85}, minute=2)
    assert verdicts(rows) == {"drain": Verdict.OK}
    rows += run_rows({"drain": 0.6}, minute=3)  # against the run before it: 0.85
    assert verdicts(rows) == {"drain": Verdict.SLOWER}


def test_compares_with_the_last_run_of_the_same_mode_that_has_the_figure() -> None:
    rows = run_rows({"drain": 1.0, "ingest single-op": 0.8}, minute=1)
    rows += run_rows({"drain": 0.5}, minute=2, mode="full")  # another mode: not a reference
    rows += run_rows({"drain": 0.95}, minute=3)  # no single-op figure in this one
    rows += run_rows({"drain": 0.95, "ingest single-op": 0.6}, minute=4)
    assert verdicts(rows) == {"drain": Verdict.OK, "ingest single-op": Verdict.SLOWER}


def test_a_figure_without_an_earlier_value_is_new_and_passes() -> None:
    latest, diffs = compare(run_rows({"drain": 1.0}, minute=1), TOLERANCES)
    assert latest is not None and [d.verdict for d in diffs] == [Verdict.NEW]
    assert exit_code(diffs) == 0


def test_a_zero_figure_or_a_failed_group_is_invalid() -> None:
    rows = run_rows({"drain": 1.0}, minute=1)
    rows += run_rows({"drain": 0.0}, minute=2, errors={"cluster": "TimeoutError: x"})
    found = verdicts(rows)
    assert found == {"drain": Verdict.INVALID, "cluster: run": Verdict.INVALID}
    assert exit_code(compare(rows, TOLERANCES)[1]) == 2


def test_exit_codes_from_the_record_file(tmp_path: Path) -> None:
    results, tolerances = tmp_path / "results.jsonl", tmp_path / "tolerances.json"
    tolerances.write_text('{"default": 0.2}')
    args = ["--results", str(results), "--tolerances", str(tolerances)]
    assert main(args) == 2  # nothing recorded
    record.append(run_rows({"drain": 1.0}, minute=1), results)
    record.append(run_rows({"drain": 0.9}, minute=2), results)
    assert main(args) == 0
    record.append(run_rows({"drain": 0.5}, minute=3), results)
    assert main(args) == 1
    assert record.load(results)[-1]["ratio"] == 0.5


def test_the_bar_is_the_median_of_the_last_three_runs() -> None:
    """One lucky run (1.6x) does not make the next ordinary one (0.8x) a regression."""
    rows = run_rows({"drain": 0.8}, minute=1) + run_rows({"drain": 0.82}, minute=2)
    rows += run_rows({"drain": 1.6}, minute=3) + run_rows({"drain": 0.8}, minute=4)
    assert verdicts(rows) == {"drain": Verdict.OK}  # median of 0.8, 0.82, 1.6: 0.82
    rows += run_rows({"drain": 0.5}, minute=5)  # median of 0.82, 1.6, 0.8: 0.82
    assert verdicts(rows) == {"drain": Verdict.SLOWER}


def test_an_invalid_earlier_run_is_no_reference() -> None:
    rows = run_rows({"drain": 1.0}, minute=1)
    rows += run_rows({"drain": 0.0}, minute=2, errors={"drain": "TimeoutError"})
    rows += run_rows({"drain": 0.95}, minute=3)
    assert verdicts(rows) == {"drain": Verdict.OK}
