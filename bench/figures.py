"""One benchmark figure: a measured value, its baseline from the same run, and the goal."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    baseline_name: str
    baseline: float
    #: What the figure must reach, in words; `met` says whether it did. There is no
    #: "reported" goal: a figure that cannot fail catches nothing.
    goal: str
    met: bool
    note: str = ""
    #: Lower is better (requests, latency): the ratio is baseline / value.
    invert: bool = False
    #: The bench/run group that measured it (set by bench/run).
    group: str = ""

    @property
    def ratio(self) -> float:
        num, den = (self.baseline, self.value) if self.invert else (self.value, self.baseline)
        if not (_finite(num) and _finite(den)) or not den:
            return float("nan")
        return num / den

    def problems(self) -> list[str]:
        """Why this figure cannot count as measured: empty when it can."""
        found = [
            f"{label} is {number!r}"
            for label, number in (("value", self.value), ("baseline", self.baseline))
            if not _finite(number) or number <= 0
        ]
        if not self.goal.strip() or self.goal.strip().lower().startswith("reported"):
            found.append(f"goal {self.goal!r} cannot be missed")
        return found

    @property
    def passed(self) -> bool:
        return self.met and not self.problems()

    def row(self) -> str:
        problems = self.problems()
        status = "met" if self.passed else "NOT met"
        if problems:
            status = "FAILED: " + "; ".join(problems)
        less = " less" if self.invert else ""
        return (
            f"| {self.name} | {_fmt(self.value)} {self.unit} | {self.baseline_name}: "
            f"{_fmt(self.baseline)} {self.unit} | {self.ratio:,.2f}x{less} | {self.goal} "
            f"| {status} | {self.note} |"
        )


HEADER = (
    "| figure | cioq | baseline (same run) | ratio | goal | result | notes |\n"
    "|---|---|---|---|---|---|---|"
)


def _finite(number: object) -> bool:
    return isinstance(number, int | float) and math.isfinite(number)


def _fmt(value: float) -> str:
    if not _finite(value):
        return str(value)
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"
