"""Run every benchmark and print each figure with its baseline and ratio.

``bench/run --quick`` takes a few minutes; ``bench/run`` (the full run) drains 1,000,000
and 5,000,000-op backlogs and takes longer. Every process binds to 127.0.0.1 with its own
redis-server; every figure stops by itself (each wait has a deadline).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import (
    app_api,
    app_throughput,
    cluster,
    drain,
    fairness,
    framework,
    ingest,
    latency,
    live,
    naive,
    pipelines,
    record,
    report,
)
from bench.figures import HEADER, Figure

GROUPS = (
    "ingest",
    "framework",
    "drain",
    "naive",
    "latency",
    "pipelines",
    "app",
    "cluster",
    "live",
    "fairness",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, a few minutes")
    parser.add_argument(
        "--only",
        choices=GROUPS,
        action="append",
        default=None,
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs' temporary folder")
    parser.add_argument(
        "--capacity", type=float, help="latency at half this req/s (default: measure the stack)"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=record.RESULTS,
        help="append the figures to this file (default bench/results.jsonl)",
    )
    parser.add_argument("--no-record", action="store_true", help="append nothing")
    args = parser.parse_args()
    wanted = set(args.only or GROUPS)
    tmp = Path(tempfile.mkdtemp(prefix="cioq-bench-"))
    measures: dict[str, Callable[[], list[Figure]]] = {
        "ingest": lambda: ingest.run(tmp, quick=args.quick),
        "framework": lambda: framework.run(tmp, quick=args.quick),
        "drain": lambda: drain.run(tmp, quick=args.quick),
        "naive": lambda: naive.run(tmp, quick=args.quick),
        "pipelines": lambda: pipelines.run(tmp, quick=args.quick),
        "app": lambda: [
            *app_api.run(tmp, quick=args.quick),
            *app_throughput.run(tmp, quick=args.quick),
        ],
        "live": lambda: live.run(tmp, quick=args.quick),
        "fairness": lambda: fairness.run(tmp, quick=args.quick),
        "latency": lambda: latency.run(tmp, quick=args.quick, capacity_per_s=args.capacity),
        "cluster": lambda: cluster.run(tmp, quick=args.quick),
    }
    figures: list[Figure] = []
    errors: dict[str, str] = {}
    started = time.monotonic()
    # The code measured is the code at the start: a commit made during a long run is not.
    head, started_at = record.commit(), datetime.now(UTC)
    try:
        for group, measure in measures.items():  # the order of the original run
            if group not in wanted:
                continue
            try:
                found = measure()
            except Exception as exc:  # a group that raised (timeout, error) fails the run
                traceback.print_exc()
                errors[group] = f"{type(exc).__name__}: {exc}"
                print(f"| {group} | FAILED: {errors[group]} |", flush=True)
                continue
            for figure in found:
                figure.group = group
                print(figure.row(), flush=True)
            figures += found
    finally:
        if args.keep:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    mode = "quick" if args.quick else "full"
    print(f"\n## bench/run ({mode}, {time.monotonic() - started:.0f} s)\n")
    print(HEADER)
    for figure in figures:
        print(figure.row())
    for group, error in errors.items():
        print(f"| {group} | FAILED: {error} |")
    if not args.no_record:
        lines = record.rows(figures, errors, mode=mode, now=started_at, head=head)
        record.append(lines, args.results)
        print(f"\nrecorded in {args.results}; bench/compare compares it with earlier runs")
        if args.results == record.RESULTS:
            report.write()
            print(f"{report.PAGE.relative_to(record.ROOT)}: figures regenerated from the record")
    return run_status(figures, errors)


def run_status(figures: list[Figure], errors: dict[str, str]) -> int:
    """2 when a group raised or a figure measured nothing, 1 when a goal was missed."""
    if errors or any(figure.problems() for figure in figures):
        return 2
    return 0 if all(figure.met for figure in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
