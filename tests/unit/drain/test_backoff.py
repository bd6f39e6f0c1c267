"""The retry schedule: exact delays with a fixed random source."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.delivery.backoff import backoff_ms


@pytest.mark.parametrize(
    ("attempt", "rng", "expected"),
    [
        (0, 1.0, 0),
        (1, 1.0, 1000),
        (2, 1.0, 2000),
        (3, 0.5, 2000),
        (10, 1.0, 300_000),
        (200, 1.0, 300_000),
        (5, 0.0, 0),
    ],
)
def test_backoff_table(attempt: int, rng: float, expected: int) -> None:
    """Full jitter under min(cap, base * 2**(attempt-1))."""
    assert backoff_ms(attempt, base_ms=1000, cap_ms=300_000, rng=lambda: rng) == expected


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    base=st.integers(min_value=0, max_value=10_000),
    cap=st.integers(min_value=0, max_value=10**7),
    r=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_backoff_bounds(attempt: int, base: int, cap: int, r: float) -> None:
    """The delay is never negative and never above the cap."""
    delay = backoff_ms(attempt, base_ms=base, cap_ms=cap, rng=lambda: r)
    assert 0 <= delay <= cap
