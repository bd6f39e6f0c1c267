"""Why a drain stops: the one vocabulary of the engine, the block policies and metrics."""

from __future__ import annotations

from enum import StrEnum


class StopReason(StrEnum):
    """Why a drain handed its shards back; also the bounded ``stopped`` metrics label."""

    BUSY = "busy"  # another drain holds the lease
    COVERED = "covered"  # the workspace's lingering drain will pack this shard in time
    EMPTY = "empty"
    LINGER = "linger"  # the heads may wait for more ops
    BUDGET = "budget"  # the drain's budget is spent; handed back for fairness
    BACKLOG = "backlog"  # a live drain found a backlog and handed it to the bulk queue
    PAUSED = "paused"  # the workspace is paused (by another drain or an operator)
    BACKOFF = "backoff"
    THROTTLED = "throttled"
    SETUP = "setup"
    EXHAUSTED = "exhausted"
    SHUTDOWN = "shutdown"
    LEASE_LOST = "lease_lost"
    RATE_LIMITED = "rate_limited"  # App lane: no rate-limit slot soon enough
