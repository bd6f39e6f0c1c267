"""Run every benchmark and print each figure with its baseline and ratio.

``bench/run --quick`` takes a few minutes; ``bench/run`` (the full run) drains 1,000,000
and 5,000,000-op backlogs and takes longer. Every process binds to 127.0.0.1 with its own
redis-server; every figure stops by itself (each wait has a deadline).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench import (
    app_api,
    cluster,
    drain,
    fairness,
    framework,
    ingest,
    latency,
    live,
    naive,
    pipelines,
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


def main() -> None:
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
    args = parser.parse_args()
    wanted = set(args.only or GROUPS)
    tmp = Path(tempfile.mkdtemp(prefix="cioq-bench-"))
    figures: list[Figure] = []
    started = time.monotonic()
    try:
        if "ingest" in wanted:
            figures += _report(ingest.run(tmp, quick=args.quick))
        if "framework" in wanted:
            figures += _report(framework.run(tmp, quick=args.quick))
        if "drain" in wanted:
            figures += _report(drain.run(tmp, quick=args.quick))
        if "naive" in wanted:
            figures += _report(naive.run(tmp, quick=args.quick))
        if "pipelines" in wanted:
            figures += _report(pipelines.run(tmp, quick=args.quick))
        if "app" in wanted:
            figures += _report(app_api.run(tmp, quick=args.quick))
        if "live" in wanted:
            figures += _report(live.run(tmp, quick=args.quick))
        if "fairness" in wanted:
            figures += _report(fairness.run(tmp, quick=args.quick))
        if "latency" in wanted:
            figures += _report(latency.run(tmp, quick=args.quick, capacity_per_s=args.capacity))
        if "cluster" in wanted:
            figures += _report(cluster.run(tmp, quick=args.quick))
    finally:
        if args.keep:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    mode = "--quick" if args.quick else "full"
    print(f"\n## bench/run ({mode}, {time.monotonic() - started:.0f} s)\n")
    print(HEADER)
    for figure in figures:
        print(figure.row())


def _report(found: list[Figure]) -> list[Figure]:
    for figure in found:
        print(figure.row(), flush=True)
    return found


if __name__ == "__main__":
    main()
