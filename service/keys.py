"""Every Redis key cioq uses is built here, and nowhere else.

Per-shard keys share one hash tag, ``{<workspace>:<shard>}`` for the Track lane and
``{<workspace>:<lane>:<shard>}`` for every other lane: the drain's scripts (acquire,
renew, release, resolve, attempt, inflight) each touch one shard's keys, so they stay
within one Redis Cluster slot. The ingest and replay scripts (``lua/enqueue.lua``,
``lua/replay.lua``) and the idempotent transaction still write several shards (and the
dead-letter stream) in one call, so today cioq runs on a single Redis, not a cluster.

Each lane has its own streams (its own shard key space): a lane paused by Customer.io
(a Pipelines 401) must not hold back the jobs of another lane that share a shard number.
Track keeps its original keys, so a queue written before lanes existed drains unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.jobs import Traffic
from service.lanes import Lane

PREFIX = "cioq"


@dataclass(frozen=True, slots=True)
class ShardKeys:
    """The keys of one shard: a stream of jobs and the state that guards its delivery."""

    workspace: str
    shard: int
    lane: Lane = Lane.TRACK
    #: Bulk jobs have streams of their own, so a backfill never sits ahead of live jobs.
    traffic: Traffic = Traffic.LIVE

    @property
    def tag(self) -> str:
        bulk = ":bulk" if self.traffic is Traffic.BULK else ""
        if self.lane is Lane.TRACK:
            return f"{{{self.workspace}{bulk}:{self.shard}}}"
        return f"{{{self.workspace}:{self.lane}{bulk}:{self.shard}}}"

    @property
    def stream(self) -> str:
        """Jobs waiting for delivery, oldest first; an entry leaves only when resolved."""
        return f"{PREFIX}:q:{self.tag}"

    @property
    def lease(self) -> str:
        """Holder token of the one drain allowed to deliver this shard (SET NX PX)."""
        return f"{PREFIX}:lease:{self.tag}"

    @property
    def fence(self) -> str:
        """Counter that issues ever-growing lease tokens, so a stale holder is refused."""
        return f"{PREFIX}:fence:{self.tag}"

    @property
    def trigger(self) -> str:
        """Debounce marker: a drain trigger for this shard is already on its way."""
        return f"{PREFIX}:trig:{self.tag}"

    @property
    def retry(self) -> str:
        """Hash of the shard's retry state: attempts, history, not-before time."""
        return f"{PREFIX}:retry:{self.tag}"

    @property
    def inflight(self) -> str:
        """Hash naming the entries sent but not yet resolved (the crash-loop guard)."""
        return f"{PREFIX}:inflight:{self.tag}"


def shard_keys(
    workspace: str, shard: int, lane: Lane = Lane.TRACK, traffic: Traffic = Traffic.LIVE
) -> ShardKeys:
    return ShardKeys(workspace, shard, lane, traffic)


def linger_chain(workspace: str, lane: Lane, traffic: Traffic) -> str:
    """The shard whose drain lingers for the whole workspace lane (its re-trigger pending).

    Small live drains of other shards defer to it: it packs their ops too, in time.
    """
    return f"{PREFIX}:linger:{{{workspace}}}:{lane}:{traffic}"


def pause(workspace: str, lane: Lane = Lane.TRACK) -> str:
    """Set while a workspace's lane must not be sent to (429 or bad credentials), with a TTL."""
    if lane is Lane.TRACK:
        return f"{PREFIX}:pause:{{{workspace}}}"
    return f"{PREFIX}:pause:{{{workspace}}}:{lane}"


def dead_letters(workspace: str) -> str:
    """The workspace's dead-letter stream; never trimmed automatically."""
    return f"{PREFIX}:dlq:{{{workspace}}}"


def idempotency(workspace: str, key: str) -> str:
    """The first answer to a request sent with this Idempotency-Key, kept for a window."""
    return f"{PREFIX}:idem:{{{workspace}}}:{key}"


def drain_rate(workspace: str) -> str:
    """Recent drained-op counts per second, for the backlog_seconds signal."""
    return f"{PREFIX}:rate:{{{workspace}}}"


def pause_note(workspace: str, lane: str) -> str:
    """Hash describing an operator's pause of a lane: reason, who, when; expires with it."""
    return f"{PREFIX}:pausenote:{{{workspace}}}:{lane}"


def audit() -> str:
    """Stream of operator actions (pause, resume, replay, purge): who, what, when."""
    return f"{PREFIX}:audit"


def activity(workspace: str, minute: int) -> str:
    """Counts of one minute (epoch minutes): jobs accepted, delivered, upstream statuses."""
    return f"{PREFIX}:act:{{{workspace}}}:{minute}"
