"""The retry schedule: full-jitter exponential backoff, as a pure function.

``delay = uniform(0, min(cap_ms, base_ms * 2 ** (attempt - 1)))`` (AWS "full jitter"):
retries from many shards spread out instead of arriving together. Tests pass a fixed
`rng` and get exact delays.
"""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_ms(
    attempt: int,
    *,
    base_ms: int,
    cap_ms: int,
    rng: Callable[[], float] = random.random,
) -> int:
    """Milliseconds to wait before attempt `attempt + 1`, after `attempt` failures (≥ 1)."""
    if attempt < 1:
        return 0
    # 2**63 overflows nothing in Python, but capping the exponent keeps it cheap.
    ceiling = min(cap_ms, base_ms * (1 << min(attempt - 1, 62)))
    return int(rng() * ceiling)
