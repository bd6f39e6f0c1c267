"""`observe_many` leaves what `Histogram.observe` of each value leaves, in both of the
value classes cioq runs with (in-process, and a worker's file-backed multiprocess mode):
it reads prometheus_client attributes the library does not publish, so an upgrade that
changes them fails here."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, values

from service.metrics.definitions import DELIVERY_SECONDS_BUCKETS
from service.metrics.histograms import observe_many

LATENCIES_S = st.lists(
    st.one_of(
        st.floats(min_value=0, max_value=10_000, allow_nan=False),
        st.sampled_from([0.0, *DELIVERY_SECONDS_BUCKETS]),  # exactly on a bound
    ),
    max_size=300,
)


@pytest.fixture(params=["in-process", "multiprocess"])
def value_class(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "in-process":
        yield request.param
        return
    saved_class, saved_dir = values.ValueClass, os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path_factory.mktemp("prom"))
    values.ValueClass = values.get_value_class()
    try:
        yield request.param
    finally:
        values.ValueClass = saved_class
        if saved_dir is None:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        else:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = saved_dir


_made = iter(range(10**9))


def _histogram() -> Histogram:
    # A name of its own each time: multiprocess mode keys its file values by name and labels.
    return Histogram(
        f"h{next(_made)}",
        "test",
        ["workspace"],
        buckets=DELIVERY_SECONDS_BUCKETS,
        registry=CollectorRegistry(),
    )


def _samples(histogram: Histogram) -> dict[str, float]:
    return {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for metric in histogram.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


# The fixture only picks the value class: each example makes its own histograms.
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(latencies_s=LATENCIES_S)
def test_observe_many_leaves_what_observing_each_leaves(
    value_class: str, latencies_s: list[float]
) -> None:
    each, many = _histogram(), _histogram()
    each_child = each.labels("default")  # the child exists either way, as in `delivered`
    for latency_s in latencies_s:
        each_child.observe(latency_s)
    observe_many(many.labels("default"), latencies_s)
    expected, got = _samples(each), _samples(many)
    assert {k.replace(each._name, "h"): v for k, v in expected.items() if "_sum" not in k} == {
        k.replace(many._name, "h"): v for k, v in got.items() if "_sum" not in k
    }
    expected_sum = next(v for k, v in expected.items() if "_sum" in k)
    got_sum = next(v for k, v in got.items() if "_sum" in k)
    assert got_sum == pytest.approx(expected_sum, rel=1e-9, abs=1e-9)


def test_a_value_on_a_bound_counts_in_that_bucket() -> None:
    histogram = _histogram()
    observe_many(histogram.labels("default"), [DELIVERY_SECONDS_BUCKETS[2]])
    cumulative = [
        s.value for s in next(iter(histogram.collect())).samples if s.name.endswith("_bucket")
    ]
    assert cumulative[:4] == [0, 0, 1, 1]
