"""Observing many values of one histogram at once.

prometheus_client's `Histogram.observe` takes one value, and in a worker (multiprocess
mode) each call writes two values to the process's mmap file under a lock. A drain
observes each delivered job's latency: with 1,000 jobs per request, that was 7 % of a
drain's CPU (py-spy over `bench/run --only drain`). `observe_many` counts the values per
bucket first and adds each count once. It reads the histogram's bucket bounds and value
objects, which prometheus_client does not publish: tests/unit/metrics/test_histograms.py
checks, for any values, that it leaves what `observe` of each leaves, so an upgrade that
renames them fails there.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

from prometheus_client import Histogram


def observe_many(child: Histogram, values: Iterable[float]) -> None:
    """`child.observe(v)` for each of `values` (finite; without exemplars)."""
    bounds: list[float] = child._upper_bounds
    counts = [0] * len(bounds)
    total = 0.0
    for value in values:
        total += value
        counts[bisect_left(bounds, value)] += 1  # the first bucket with value <= bound
    if not any(counts):
        return
    child._sum.inc(total)
    for index, count in enumerate(counts):
        if count:
            child._buckets[index].inc(count)
