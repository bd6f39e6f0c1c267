"""How much work the load tests do: the suite's short form, or the soak's full size.

The short form checks the same properties (nothing lost, once, in order, within limits) on a
backlog big enough to fill batches, spread over every shard and outlast the fault; the soak
(`scripts/soak`, ``CIOQ_SOAK=1``) runs the same tests at full size without coverage.
"""

from __future__ import annotations

import os

SOAK = os.environ.get("CIOQ_SOAK") == "1"


def sized(short: int, soak: int) -> int:
    """``soak`` under ``scripts/soak``, else ``short``."""
    return soak if SOAK else short
