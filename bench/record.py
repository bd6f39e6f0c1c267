"""The benchmark record: every bench/run appends its figures to bench/results.jsonl.

One JSON line per figure (sorted keys), so a run shows up in `git diff` as the lines it
added and the file can be grepped by figure name. Each line carries its run's id, commit,
date, mode and machine, so a figure can be compared with the last run of the same mode
(bench/compare) without reading anything else.
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.figures import Figure

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.jsonl"


def machine() -> dict[str, Any]:
    """What a figure depends on besides the code: cores, CPU model, Python, load."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count() or 0,
        "model": model or platform.processor(),
        "python": platform.python_version(),
        # Other people's work on a shared machine moves absolute figures: say how much.
        "load_1m": round(os.getloadavg()[0], 2),
    }


def commit() -> tuple[str, bool]:
    """HEAD's commit and whether the tree has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            # The record, and the page generated from it, change with every run: not a
            # change to what is measured.
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                f":!{RESULTS}",
                f":!{ROOT / 'docs' / 'benchmarks.md'}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown", True
    return head, bool(status.strip())


def _number(value: float) -> float | None:
    """JSON has no NaN: an unmeasurable number is stored as null (and fails compare)."""
    return round(value, 4) if isinstance(value, int | float) and math.isfinite(value) else None


def rows(
    figures: Iterable[Figure],
    errors: dict[str, str],
    *,
    mode: str,
    now: datetime | None = None,
    facts: dict[str, Any] | None = None,
    head: tuple[str, bool] | None = None,
) -> list[dict[str, Any]]:
    """The record's lines for one run: one per figure, one per group that raised."""
    now = now or datetime.now(UTC)
    sha, dirty = head or commit()
    common = {
        "run": f"{now:%Y%m%dT%H%M%SZ}-{sha[:10]}",
        "date": now.isoformat(timespec="seconds"),
        "commit": sha,
        "dirty": dirty,
        "mode": mode,
        "machine": facts if facts is not None else machine(),
    }
    out = [
        {
            **common,
            "group": figure.group,
            "figure": figure.name,
            "value": _number(figure.value),
            "unit": figure.unit,
            "baseline_name": figure.baseline_name,
            "baseline": _number(figure.baseline),
            "ratio": _number(figure.ratio),
            "goal": figure.goal,
            "met": figure.passed,
            "problems": figure.problems(),
            "note": figure.note,
        }
        for figure in figures
    ]
    out += [
        {**common, "group": group, "figure": f"{group}: run", "error": error, "met": False}
        for group, error in errors.items()
    ]
    return out


def append(lines: list[dict[str, Any]], path: Path = RESULTS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as out:
        for line in lines:
            out.write(orjson.dumps(line, option=orjson.OPT_SORT_KEYS) + b"\n")


def load(path: Path = RESULTS) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
