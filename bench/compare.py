"""Compare the latest bench/run with the last recorded run of the same mode.

``bench/compare [--results FILE] [--tolerances FILE]`` prints, for every figure of the
latest run, its ratio against the median of its last three earlier runs of the same mode,
the change, and the figure's tolerance; it exits

- 0 when no ratio fell by more than its tolerance,
- 1 when one did (a regression),
- 2 when a figure of the latest run is not a measurement (zero, missing, an error).

Tolerances (bench/tolerances.json) are fractions of the earlier ratio, set above the
spread measured on an unchanged tree (the file says how each was measured).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import orjson

from bench.record import RESULTS, load

TOLERANCES = RESULTS.parent / "tolerances.json"
#: Earlier runs whose median ratio a figure is compared with.
REFERENCE_RUNS = 3


class Verdict(Enum):
    OK = "ok"
    NEW = "new"  # no earlier run of this mode has the figure
    FASTER = "faster"
    SLOWER = "SLOWER"
    INVALID = "INVALID"


@dataclass(frozen=True)
class Diff:
    figure: str
    before: float | None
    after: float | None
    tolerance: float
    verdict: Verdict
    why: str = ""

    @property
    def change(self) -> float | None:
        if self.before is None or self.after is None or not self.before:
            return None
        return self.after / self.before - 1

    def row(self) -> str:
        before = "-" if self.before is None else f"{self.before:.2f}x"
        after = "-" if self.after is None else f"{self.after:.2f}x"
        change = "" if self.change is None else f"{self.change:+.0%}"
        why = f" ({self.why})" if self.why else ""
        return (
            f"| {self.figure} | {before} | {after} | {change} | ±{self.tolerance:.0%} "
            f"| {self.verdict.value}{why} |"
        )


HEADER = (
    "| figure | last 3 runs, median | this run | change | tolerance | verdict |\n"
    "|---|---|---|---|---|---|"
)


def runs(rows: list[dict[str, Any]]) -> list[str]:
    """Run ids in the order they were recorded."""
    return list(dict.fromkeys(row["run"] for row in rows))


def tolerance_for(figure: str, tolerances: dict[str, Any]) -> float:
    per_figure: dict[str, float] = tolerances.get("figures", {})
    return float(per_figure.get(figure, tolerances.get("default", 0.25)))


def compare(
    rows: list[dict[str, Any]], tolerances: dict[str, Any], latest: str | None = None
) -> tuple[str | None, list[Diff]]:
    """Each figure of the latest run (or run `latest`) against the median of its last
    `REFERENCE_RUNS` measured values in earlier runs of the same mode."""
    order = runs(rows)
    if not order:
        return None, []
    latest = latest or order[-1]
    now = [row for row in rows if row["run"] == latest]
    mode = now[0]["mode"]
    position = {run: index for index, run in enumerate(order)}
    earlier: dict[str, list[float]] = {}
    for row in rows:
        measured = not row.get("error") and not row.get("problems") and row.get("ratio")
        if measured and row["mode"] == mode and position[row["run"]] < position[latest]:
            earlier.setdefault(row["figure"], []).append(float(row["ratio"]))
    diffs = []
    for row in now:
        name = row["figure"]
        tol = tolerance_for(name, tolerances)
        # The median of the figure's last REFERENCE_RUNS runs: one lucky or unlucky
        # run on a shared machine does not become the bar the next run is judged by.
        found = earlier.get(name)
        before = statistics.median(found[-REFERENCE_RUNS:]) if found else None
        after = row.get("ratio")
        if row.get("error") or row.get("problems") or after is None:
            why = row.get("error") or "; ".join(row.get("problems") or ["no ratio"])
            diffs.append(Diff(name, before, after, tol, Verdict.INVALID, str(why)[:200]))
        elif before is None:
            diffs.append(Diff(name, None, after, tol, Verdict.NEW))
        elif after < before * (1 - tol):
            diffs.append(Diff(name, before, after, tol, Verdict.SLOWER))
        elif after > before * (1 + tol):
            diffs.append(Diff(name, before, after, tol, Verdict.FASTER))
        else:
            diffs.append(Diff(name, before, after, tol, Verdict.OK))
    return latest, diffs


def exit_code(diffs: list[Diff]) -> int:
    verdicts = {diff.verdict for diff in diffs}
    if Verdict.INVALID in verdicts:
        return 2
    return 1 if Verdict.SLOWER in verdicts else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--tolerances", type=Path, default=TOLERANCES)
    parser.add_argument("--run", help="compare this run id instead of the latest")
    args = parser.parse_args(argv)
    tolerances = orjson.loads(args.tolerances.read_bytes()) if args.tolerances.exists() else {}
    latest, diffs = compare(load(args.results), tolerances, args.run)
    if latest is None:
        print(f"bench/compare: no run recorded in {args.results}")
        return 2
    print(f"bench/compare: run {latest} against the median of its last three runs of the mode\n")
    print(HEADER)
    for diff in diffs:
        print(diff.row())
    code = exit_code(diffs)
    verdict = {0: "no ratio fell beyond its tolerance", 1: "REGRESSION", 2: "INVALID figures"}
    print(f"\nbench/compare: {verdict[code]} (exit {code})")
    return code


if __name__ == "__main__":
    sys.exit(main())
