"""`new_event_id` makes ULIDs by hand (for speed): python-ulid must read them as its own."""

from __future__ import annotations

import time
from collections import Counter

from ulid import ULID

from service.jobs import new_event_id


def test_event_ids_are_ulids_of_now() -> None:
    before_ms = time.time_ns() // 1_000_000
    ids = [new_event_id() for _ in range(20_000)]
    after_ms = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = ULID.from_str(text)
        assert str(parsed) == text
        assert before_ms <= parsed.milliseconds <= after_ms


def test_the_random_part_uses_every_letter_evenly() -> None:
    """16 random letters of 32 (80 bits): each letter near 1/32 of them, none missing."""
    letters = Counter("".join(new_event_id()[10:] for _ in range(20_000)))
    assert len(letters) == 32
    expected = 20_000 * 16 / 32
    assert all(0.9 * expected < n < 1.1 * expected for n in letters.values())
