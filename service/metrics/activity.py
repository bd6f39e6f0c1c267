"""Per-minute activity shared by every process: jobs accepted, jobs delivered, upstream answers.

Prometheus counters live in each process and are summed by Prometheus; the operator's
overview (console, ``cioq status``) needs the same numbers from Redis alone. So the metric
functions that count them (`service.metrics.definitions`) also add to this process's
`TALLY`, and a daemon thread adds the tally to Redis once a second: one hash per
workspace and minute (`keys.activity`), one field per lane and name (`track:accepted`),
expiring after `KEEP_S`. Nothing on the ingest or delivery path waits for Redis here. A
process that dies loses at most its last second of counts: this is an overview, not a
ledger.

Only processes started by ``cioq api`` and ``cioq worker`` call `Tally.configure`; until
then `add` does nothing (in-process tests, the CLI).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import Counter

from service import keys
from service.config import RedisSettings
from service.store.connections import STORE_ERRORS, AsyncStore, SyncStore, connect_metrics

log = logging.getLogger("cioq.metrics")

FLUSH_INTERVAL_S = 1.0
#: A minute's hash is read during that minute and the next; then it only costs memory.
KEEP_S = 3 * 60


def activity_name(lane: str, name: str) -> str:
    """The tally field of one lane's count: ``track:accepted``, ``app:status:200``."""
    return f"{lane}:{name}"


#: Starts a producer's tally fields (``@billing:accepted``); no lane name starts with it.
PRODUCER_MARK = "@"


def producer_activity(producer: str, name: str) -> str:
    """The tally field of one producer's count (across lanes): ``@billing:delivered``."""
    return f"{PRODUCER_MARK}{producer}:{name}"


def producers_activity(counts: dict[str, float]) -> dict[str, dict[str, float]]:
    """Each producer's counts out of a workspace's, under their plain names."""
    out: dict[str, dict[str, float]] = {}
    for key, value in counts.items():
        if key.startswith(PRODUCER_MARK):
            producer, _, name = key[1:].rpartition(":")
            out.setdefault(producer, {})[name] = value
    return out


def lane_activity(counts: dict[str, float], lane: str) -> dict[str, float]:
    """One lane's counts out of a workspace's, under their plain names."""
    prefix = f"{lane}:"
    return {k.removeprefix(prefix): v for k, v in counts.items() if k.startswith(prefix)}


def minute_of(now_s: float) -> int:
    return int(now_s // 60)


class Tally:
    """Counts waiting to be added to Redis; safe across threads and forked children."""

    def __init__(self, *, background: bool = True) -> None:
        """`background`: a daemon thread flushes every second; else the caller flushes."""
        self._background = background
        self._redis_settings: RedisSettings | None = None
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()
        self._started = False
        self._client: SyncStore | None = None
        # After a fork the parent's thread and lock are gone: the child starts over. A
        # hook, not a getpid() per add: that was a system call per count, several per
        # ingest request (strace under bench/run's single-op load).
        forked = weakref.WeakMethod(self._forked)  # a hook must not keep a tally alive
        os.register_at_fork(after_in_child=lambda: (method := forked()) and method())

    def configure(self, redis: RedisSettings) -> None:
        """Start recording for this process (and children it forks) to `settings`' Redis."""
        self._redis_settings = redis

    def add(self, workspace: str, name: str, count: int = 1) -> None:
        if self._redis_settings is None or count <= 0:
            return
        if not self._started:
            self._start()
        with self._lock:
            self._counts[(workspace, name)] += count

    def add_pair(self, workspace: str, first: str, second: str, count: int = 1) -> None:
        """`add` of two names at once (one lock), as an accepted job counts for its lane
        and its producer."""
        if self._redis_settings is None or count <= 0:
            return
        if not self._started:
            self._start()
        with self._lock:
            counts = self._counts
            counts[(workspace, first)] += count
            counts[(workspace, second)] += count

    def _start(self) -> None:
        """This process's flusher, started by its first count."""
        self._started = True
        if self._background:
            threading.Thread(target=self._run, name="cioq-activity", daemon=True).start()

    def _forked(self) -> None:
        self._lock = threading.Lock()
        self._counts = Counter()
        self._client = None
        self._started = False

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL_S)
            self.flush()

    def flush(self, *, now_s: float | None = None) -> None:
        """Add the counts so far to Redis; on a Redis error they are dropped, and logged."""
        with self._lock:
            counts, self._counts = self._counts, Counter()
        if not counts or self._redis_settings is None:
            return
        if self._client is None:
            self._client = connect_metrics(self._redis_settings)
        minute = minute_of(time.time() if now_s is None else now_s)
        pipe = self._client.pipeline(transaction=False)
        for (workspace, name), count in counts.items():
            pipe.hincrby(keys.activity(workspace, minute), name, count)
        for workspace in {workspace for workspace, _ in counts}:
            pipe.expire(keys.activity(workspace, minute), KEEP_S)
        try:
            pipe.execute()
        except STORE_ERRORS as exc:
            log.warning("activity counts for the overview were lost: %s", exc)


TALLY = Tally()


async def per_minute(
    client: AsyncStore, workspace: str, *, now_s: float | None = None
) -> dict[str, float]:
    """Each name's count over the last 60 s: this minute plus the part of the last still in it."""
    now = time.time() if now_s is None else now_s
    minute = minute_of(now)
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.activity(workspace, minute))
    pipe.hgetall(keys.activity(workspace, minute - 1))
    current, previous = await pipe.execute()
    weight = 1 - (now % 60) / 60
    out: dict[str, float] = {}
    for counts, factor in ((current, 1.0), (previous, weight)):
        for name, value in counts.items():
            out[name.decode()] = out.get(name.decode(), 0.0) + int(value) * factor
    return out
