"""The retention cut-off: which dead times are past ``CIOQ_DEAD_LETTER_MAX_AGE_S``."""

from __future__ import annotations

import pytest

from service.store.dead_letter_retention import cutoff_ms

NOW_MS = 1_800_000_000_000
DAY_S = 86_400


@pytest.mark.parametrize(
    ("max_age_s", "expected"),
    [
        (0, None),  # 0 keeps every letter
        (1, NOW_MS - 1000),
        (30 * DAY_S, NOW_MS - 30 * DAY_S * 1000),
    ],
)
def test_the_cutoff_is_now_less_the_age_and_zero_keeps_all(
    max_age_s: int, expected: int | None
) -> None:
    assert cutoff_ms(NOW_MS, max_age_s) == expected
