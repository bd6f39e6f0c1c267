"""One benchmark figure: a measured value, its baseline from the same run, and the goal."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    baseline_name: str
    baseline: float
    goal: str
    met: bool
    note: str = ""
    #: Lower is better (requests, latency): the ratio is baseline / value.
    invert: bool = False

    @property
    def ratio(self) -> float:
        num, den = (self.baseline, self.value) if self.invert else (self.value, self.baseline)
        return num / den if den else float("inf")

    def row(self) -> str:
        status = "met" if self.met else "NOT met"
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


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"
