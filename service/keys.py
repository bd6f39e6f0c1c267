"""Every Redis key cioq uses is built here, and nowhere else.

Two kinds of hash tag, so that every Lua script and every transaction touches one Redis
Cluster slot: a shard's keys share its tag, ``{<workspace>:<shard>}`` for the Track lane and
``{<workspace>:<lane>:<shard>}`` for every other lane (its stream, lease, fence, trigger,
retry and in-flight state, and the markers of requests written into it), and a
workspace's own keys share ``{<workspace>}`` (pauses and their notes, dead letters,
idempotency answers, drain rate, activity counts). The operators' audit stream is one
key of its own, written apart from the changes it records. Shards spread over the
cluster; a request that spans shards is written one slot at a time
(`service.store.slots`), never by one script over several tags.

Each lane has its own streams (its own shard key space): a lane paused by Customer.io
(a Pipelines 401) must not hold back the jobs of another lane that share a shard number.
A lane's registration says how its keys name it (`LaneTraits.key_infix`): Track keeps its
original keys, so a queue written before lanes existed drains unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from service.jobs import Lane, Traffic, lane_traits

PREFIX = "cioq"


@dataclass(frozen=True, slots=True)
class ShardKeys:
    """The keys of one shard: a stream of jobs and the state that guards its delivery."""

    workspace: str
    shard: int
    lane: Lane
    #: Bulk jobs have streams of their own, so a backfill never sits ahead of live jobs.
    traffic: Traffic = Traffic.LIVE

    @property
    def tag(self) -> str:
        bulk = ":bulk" if self.traffic is Traffic.BULK else ""
        return f"{{{self.workspace}{lane_traits(self.lane).key_infix}{bulk}:{self.shard}}}"

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

    def request(self, request_id: str) -> str:
        """Marker: this request's jobs for this shard are stored (so a retry skips them)."""
        return f"{PREFIX}:req:{self.tag}:{request_id}"

    @property
    def inflight(self) -> str:
        """Hash naming the entries sent but not yet resolved (the crash-loop guard)."""
        return f"{PREFIX}:inflight:{self.tag}"


@lru_cache(maxsize=8192)  # ingest asks once per job: 1,000 times per v2 batch
def shard_keys(
    workspace: str, shard: int, lane: Lane, traffic: Traffic = Traffic.LIVE
) -> ShardKeys:
    return ShardKeys(workspace, shard, lane, traffic)


def linger_chain(workspace: str, lane: Lane, traffic: Traffic) -> str:
    """The shard whose drain lingers for the whole workspace lane (its re-trigger pending).

    Small live drains of other shards defer to it: it packs their ops too, in time.
    """
    return f"{PREFIX}:linger:{{{workspace}}}:{lane}:{traffic}"


def pause(workspace: str, lane: Lane) -> str:
    """Set while a workspace's lane must not be sent to (429 or bad credentials), with a TTL."""
    return f"{PREFIX}:pause:{{{workspace}}}{lane_traits(lane).key_infix}"


def dead_letters(workspace: str) -> str:
    """The workspace's dead-letter stream; letters past ``CIOQ_DEAD_LETTER_MAX_AGE_S`` are
    removed by the sweeper (`service.store.dead_letter_retention`), never by length."""
    return f"{PREFIX}:dlq:{{{workspace}}}"


def dead_letters_expired(workspace: str) -> str:
    """How many of the workspace's dead letters retention removed, ever (a counter the api's
    metrics endpoint exports: one total, whichever sweeper removed them)."""
    return f"{PREFIX}:dlq-expired:{{{workspace}}}"


def dead_letter_once(workspace: str, source: str) -> str:
    """Marks that the shard entry `source` was dead-lettered: one letter per job."""
    return f"{PREFIX}:dlonce:{{{workspace}}}:{source}"


def idempotency(workspace: str, key: str) -> str:
    """The first answer to a request sent with this Idempotency-Key, kept for a window."""
    return f"{PREFIX}:idem:{{{workspace}}}:{key}"


def drain_rate(workspace: str) -> str:
    """Recent drained-op counts per second, for the backlog_seconds signal."""
    return f"{PREFIX}:rate:{{{workspace}}}"


def pause_note(workspace: str, lane: str) -> str:
    """Hash describing an operator's pause of a lane: reason, who, when; expires with it."""
    return f"{PREFIX}:pausenote:{{{workspace}}}:{lane}"


def late_failures(workspace: str) -> str:
    """The workspace's late failures: calls Customer.io accepted, then failed (capped)."""
    return f"{PREFIX}:late:{{{workspace}}}"


def late_cursor(workspace: str, activity_type: str) -> str:
    """The newest activity of `activity_type` the poller has recorded (``id|timestamp``)."""
    return f"{PREFIX}:late:cursor:{{{workspace}}}:{activity_type}"


def late_lease(workspace: str) -> str:
    """Who polls the workspace's activity log: one holder cluster-wide (a fencing token)."""
    return f"{PREFIX}:late:lease:{{{workspace}}}"


def late_backoff(workspace: str) -> str:
    """Until when (ms) the poller leaves the activity log alone after a daily-quota 429."""
    return f"{PREFIX}:late:backoff:{{{workspace}}}"


def late_counts(workspace: str) -> str:
    """Late failures recorded, ever, per ``lane|producer|type`` (a hash the api's metrics
    endpoint exports as a counter: the capped stream forgets, and the lease moves the poller
    from sweeper to sweeper)."""
    return f"{PREFIX}:late:counts:{{{workspace}}}"


def late_resent(workspace: str) -> str:
    """Late failures an operator re-sent: record id → JSON (who, when, the new job's id); a
    field goes when its record leaves the capped stream (``lua/late_commit.lua``)."""
    return f"{PREFIX}:late:resent:{{{workspace}}}"


def sent_person(workspace: str, identifier: str, value: str) -> str:
    """Jobs recently delivered to one person, by one identifier (``id``, ``email``,
    ``cio_id``): a capped sorted set of job copies scored by delivery time, with a TTL."""
    return f"{PREFIX}:sent:{{{workspace}}}:p:{identifier}:{value}"


def sent_event(workspace: str, event_id: str) -> str:
    """The job copy of a recently delivered event, by the event's id (a TTL'd string)."""
    return f"{PREFIX}:sent:{{{workspace}}}:e:{event_id}"


def audit() -> str:
    """Stream of operator actions (pause, resume, replay, purge): who, what, when."""
    return f"{PREFIX}:audit"


def activity(workspace: str, minute: int) -> str:
    """Counts of one minute (epoch minutes): jobs accepted, delivered, upstream statuses."""
    return f"{PREFIX}:act:{{{workspace}}}:{minute}"


def rate_bucket(workspace: str, limit_class: str, name: str = "") -> str:
    """A cluster-wide token bucket: the time its next token is free (``lua/token_bucket.lua``).

    One per workspace and App API limit class (``send``, ``app``), and one per broadcast
    for the ``broadcast`` class (Customer.io: one trigger per broadcast every 10 s).
    """
    suffix = f":{name}" if name else ""
    return f"{PREFIX}:bucket:{{{workspace}}}:{limit_class}{suffix}"


def app_outcome(workspace: str, job_id: str) -> str:
    """An App API job's outcome (status, Customer.io's body, attempts), kept for a window."""
    return f"{PREFIX}:outcome:{{{workspace}}}:{job_id}"


def app_outcome_ready(workspace: str, job_id: str) -> str:
    """A list pushed once when the outcome is final; the waiting ingest request BLPOPs it."""
    return f"{PREFIX}:outcome-ready:{{{workspace}}}:{job_id}"


def app_claimed(workspace: str, hour: int) -> str:
    """Delivery ids of the sends cioq delivered in one hour, so an ambiguous send's
    message lookup never takes another send's delivery for its own."""
    return f"{PREFIX}:claimed:{{{workspace}}}:{hour}"


def forget_tombstone(workspace: str, digest: str) -> str:
    """Marks an identifier the workspace was told to forget (`service.store.forget`): its
    digest, never the value, kept ``CIOQ_FORGET_TOMBSTONE_TTL_S``; replays and, in
    suppress mode, ingest drop jobs naming it."""
    return f"{PREFIX}:tomb:{{{workspace}}}:{digest}"


def forget_dropped(workspace: str) -> str:
    """Hash of how many jobs naming a forgotten person were dropped, by where (replay,
    ingest): counted in Redis because a CLI replay serves no metrics of its own."""
    return f"{PREFIX}:tomb-dropped:{{{workspace}}}"


def key_patterns(workspace: str) -> dict[str, str]:
    """SCAN patterns of the workspace's keys that may name a person in their name or value
    (forget searches them): idempotency answers, App outcomes, request markers."""
    return {
        "idempotency": f"{PREFIX}:idem:{{{workspace}}}:*",
        "app_outcome": f"{PREFIX}:outcome:{{{workspace}}}:*",
        # Markers live in their shard's slot ({<workspace>[:<lane>][:bulk]:<shard>}).
        "request_marker": f"{PREFIX}:req:{{{workspace}:*",
    }
