"""A figure that measured nothing fails the run; bench/run's exit code says which way."""

from __future__ import annotations

import math

import pytest

from bench.figures import Figure
from bench.run import run_status


def figure(value: float = 900.0, baseline: float = 1000.0, **kwargs: object) -> Figure:
    fields: dict[str, object] = {"goal": "ratio >= 0.8x", "met": True, **kwargs}
    return Figure("ingest", value, "req/s", "bare", baseline, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "baseline", "problem"),
    [
        (0.0, 1000.0, "value is 0.0"),
        (900.0, 0.0, "baseline is 0.0"),
        (math.nan, 1000.0, "value is nan"),
        (math.inf, 1000.0, "value is inf"),
        (-5.0, 1000.0, "value is -5.0"),
        (None, 1000.0, "value is None"),
    ],
)
def test_a_zero_or_missing_number_is_a_failure_even_when_called_met(
    value: float, baseline: float, problem: str
) -> None:
    found = figure(value, baseline, met=True)
    assert problem in found.problems()
    assert not found.passed
    assert "FAILED" in found.row() and "| met |" not in found.row()


@pytest.mark.parametrize("goal", ["reported", "reported (max 75%)", "", "  "])
def test_a_goal_that_cannot_be_missed_is_refused(goal: str) -> None:
    assert any("cannot be missed" in p for p in figure(goal=goal).problems())


def test_a_measured_figure_with_a_goal_passes() -> None:
    found = figure()
    assert found.problems() == [] and found.passed
    assert found.ratio == pytest.approx(0.9)


def test_a_zero_baseline_has_no_ratio() -> None:
    assert math.isnan(figure(baseline=0.0).ratio)


@pytest.mark.parametrize(
    ("figures", "errors", "status"),
    [
        ([figure()], {}, 0),
        ([figure(met=False)], {}, 1),
        ([figure(), figure(0.0)], {}, 2),
        ([figure()], {"cluster": "TimeoutError: drain not finished"}, 2),
        ([], {"drain": "RuntimeError: drain not timed"}, 2),
    ],
)
def test_run_status(figures: list[Figure], errors: dict[str, str], status: int) -> None:
    assert run_status(figures, errors) == status
