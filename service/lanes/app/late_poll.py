"""The poller of late failures: calls Customer.io accepted with 200 and failed afterwards.

Such failures show only in the workspace's activity log (App API ``GET /v1/activities``,
newest first, ``start`` cursor). One poller per workspace runs cluster-wide: it holds a
lease in Redis (``lua/late_lease.lua``) and every write it makes is fenced by it
(``lua/late_commit.lua``), so two pollers never record at once. For each failure type it
walks the log from the newest activity back to its cursor (the newest one it recorded, kept
in Redis) and, in one script, records what it found (oldest first, in a capped stream, each
tied to the delivered job it came from by `service.store.sent_index` where it can be, and
counted for the metrics) and moves the cursor: a poller that stops mid-walk recorded
nothing, and the next walk (its own or another's) finds the same activities, so a
restart loses and repeats nothing.

Its reads are spaced by ``1 / (CIOQ_APP_RPS * CIOQ_LATE_POLL_READ_SHARE)`` seconds, which
bounds it to that share of the App read budget (it is the only poller), and each also takes
a slot of the cluster-wide read bucket, so proxied reads see what it spent. A 429 with
``Retry-After`` holds the bucket that long; a 429 without one is the daily quota: the
poller leaves the log alone for an interval that doubles with each such answer (up to a
day), kept in Redis and counted (``cioq_late_polls_total{outcome="quota"}``).

A workspace's first walk has no cursor: it records the first page (the newest activities)
and starts from there; older history is not read.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlencode

import orjson

from service import keys
from service.config import AppLaneSettings, Settings, Workspace
from service.delivery.upstream import Answer
from service.lanes.app.client import AppClient
from service.lanes.app.rate_limit import LimitClass, RateLimiter
from service.metrics import app_lane as metrics
from service.store.connections import SyncStore, load_script, store_errors
from service.store.late_failures import FAILURE_TYPES, build_record
from service.store.sent_index import could_link, find_sent

log = logging.getLogger("cioq.late")

#: Activities per page: the App API's maximum.
PAGE_LIMIT = 100
#: How long a failure that names a person but links to no job waits for the drain to
#: index that job (the next walks try again) before it is recorded unlinked.
UNLINKED_WAIT_S = 10
#: The longest a daily-quota back-off lasts.
MAX_BACKOFF_S = 86_400.0


class PollOutcome(StrEnum):
    OK = "ok"
    #: 429 with Retry-After: the read bucket is held that long.
    THROTTLED = "throttled"
    #: 429 without Retry-After (the daily quota): the poller backs off.
    QUOTA = "quota"
    #: Backing off after a quota 429: no request made.
    BACKING_OFF = "backing_off"
    #: Another poller holds the lease.
    NOT_HOLDER = "not_holder"
    FAILED = "failed"


@dataclass(slots=True)
class PollReport:
    outcome: PollOutcome = PollOutcome.OK
    recorded: int = 0
    requests: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


class ActivityPoller:
    """Polls one workspace's activity log for late failures (synchronous, one thread)."""

    def __init__(
        self,
        client: SyncStore,
        app: AppLaneSettings,
        workspace: Workspace,
        http: AppClient,
        *,
        holder: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        unlinked_wait_s: int = UNLINKED_WAIT_S,
    ) -> None:
        self.redis = client
        self.app = app
        self.workspace = workspace
        self.http = http
        self.holder = holder or secrets.token_hex(8)
        self.clock, self.sleep, self.wall_ms = clock, sleep, wall_ms
        self.unlinked_wait_s = unlinked_wait_s
        self.limiter = RateLimiter(client, app)
        self.spacing_s = 1 / (app.app_rps * app.app_rate_headroom * app.late_poll_read_share)
        self.lease_ms = int(max(60.0, 3 * app.late_poll_interval_s) * 1000)
        self._next_read_at = 0.0
        self._lease = load_script(client, "late_lease")
        self._commit = load_script(client, "late_commit")
        self._release = load_script(client, "late_release")
        self._backoffs = 0

    def hold_lease(self) -> bool:
        """Take or renew the lease; False while another poller holds it."""
        with store_errors("late poll lease"):
            lease = keys.late_lease(self.workspace.name)
            return bool(int(self._lease(keys=[lease], args=[self.holder, self.lease_ms])))

    def release_lease(self) -> bool:
        """Give the lease up (a graceful stop), so another poller takes over at once; a
        walk of this poller still under way then records nothing (its writes are fenced)."""
        with store_errors("late poll lease"):
            lease = keys.late_lease(self.workspace.name)
            return bool(int(self._release(keys=[lease], args=[self.holder])))

    def poll(self) -> PollReport:
        """One walk per failure type, if this poller holds the lease and is not backing off."""
        report = PollReport()
        name = self.workspace.name
        with store_errors("late poll"):
            until = int(self.redis.get(keys.late_backoff(name)) or 0)
        if until > self.wall_ms():
            report.outcome = PollOutcome.BACKING_OFF
            return report
        for activity_type in FAILURE_TYPES:
            if not self.hold_lease():
                report.outcome = PollOutcome.NOT_HOLDER
                return report
            outcome = self._walk(activity_type, report)
            if outcome is not PollOutcome.OK:
                report.outcome = outcome
                break
        if report.outcome is PollOutcome.OK:
            self._backoffs = 0
        metrics.late_poll(name, report.outcome)
        return report

    def _walk(self, activity_type: str, report: PollReport) -> PollOutcome:
        name = self.workspace.name
        cursor_key = keys.late_cursor(name, activity_type)
        with store_errors("late poll"):
            raw = self.redis.get(cursor_key)
        first = raw is None
        text = raw.decode() if isinstance(raw, bytes) else str(raw or "")
        cursor_id, _, cursor_ts = text.partition("|")
        found: list[dict[str, Any]] = []
        start = ""
        while True:
            query = {
                "type": activity_type,
                "limit": PAGE_LIMIT,
                **({"start": start} if start else {}),
            }
            answer = self._read(f"/v1/activities?{urlencode(query)}")
            report.requests += 1
            if answer.status == 429:
                return self._throttled(answer)
            if answer.status is None or not 200 <= answer.status < 300:
                log.warning(
                    "%s: activity log read failed: %s", name, answer.status or answer.detail
                )
                return PollOutcome.FAILED
            doc = orjson.loads(answer.body)
            reached = False
            for activity in doc.get("activities") or []:
                older = cursor_ts and int(activity.get("timestamp") or 0) < int(cursor_ts)
                if (cursor_id and activity.get("id") == cursor_id) or older:
                    reached = True
                    break
                found.append(activity)
            start = str(doc.get("next") or "")
            if reached or not start or first:
                break  # no cursor yet: the first page only
            if not self.hold_lease():
                return PollOutcome.FAILED  # another poller took over mid-walk
        records, newest = self._records(found, activity_type)
        if records or (first and not found):
            # A first walk that found nothing still sets the cursor (to now): from then on
            # every walk reads back to it, however many failures appear in between.
            newest_id, newest_s = "", self.wall_ms() // 1000
            if newest is not None:
                newest_id, newest_s = str(newest["id"]), int(newest.get("timestamp") or 0)
            cursor = f"{newest_id}|{newest_s}"
            lua_keys = [
                keys.late_lease(name),
                cursor_key,
                keys.late_failures(name),
                keys.late_counts(name),
                keys.late_resent(name),
            ]
            args = [self.holder, cursor, self.app.late_failures_max_entries, *records]
            with store_errors("late poll"):
                added = int(self._commit(keys=lua_keys, args=args))
            if added < 0:
                return PollOutcome.NOT_HOLDER
            report.recorded += added
            report.by_type[activity_type] = added
        return PollOutcome.OK

    def _records(
        self, found: list[dict[str, Any]], activity_type: str
    ) -> tuple[list[str | bytes], dict[str, Any] | None]:
        """The records of `found` (newest first) to commit, oldest first, as (counts field,
        JSON) pairs, and the newest activity they cover (the cursor's next value).

        Customer.io may log a failure before the drain that sent the call has read the 200
        and indexed the job (a slow answer, a busy worker). So a failure that names a person
        but links to no job is left, with everything newer, for the next walk while it is
        younger than `UNLINKED_WAIT_S`; past that it is recorded unlinked.
        """
        out: list[str | bytes] = []
        newest: dict[str, Any] | None = None
        name = self.workspace.name
        recent_s = (self.wall_ms() // 1000) - self.unlinked_wait_s
        for activity in reversed(found):
            job = None
            if self.app.late_link_window_s > 0 and could_link(activity):
                job = find_sent(self.redis, name, activity)
                if job is None and int(activity.get("timestamp") or 0) > recent_s:
                    break
            out += build_record(name, activity_type, activity, job, self.wall_ms())
            newest = activity
        return out, newest

    def _read(self, path: str) -> Answer:
        """One read, spaced by this poller's share and within the cluster-wide read bucket."""
        wait_s = self._next_read_at - self.clock()
        if wait_s > 0:
            self.sleep(wait_s)
        slot = self.limiter.reserve(
            self.workspace.name, LimitClass.APP, max_wait_ms=int(self.spacing_s * 1000) + 1000
        )
        if slot.wait_s > 0:
            self.sleep(slot.wait_s)
        self._next_read_at = self.clock() + self.spacing_s
        return self.http.send("GET", path, b"")

    def _throttled(self, answer: Answer) -> PollOutcome:
        name = self.workspace.name
        if answer.retry_after_s is not None:
            hold_ms = int(answer.retry_after_s * 1000)
            self.limiter.hold(name, LimitClass.APP, hold_ms=hold_ms)
            return PollOutcome.THROTTLED
        self._backoffs += 1
        backoff_s = min(self.app.late_poll_interval_s * 2**self._backoffs, MAX_BACKOFF_S)
        log.warning(
            "%s: the App API's daily quota answered 429; polling late failures again in %.0f s",
            name,
            backoff_s,
        )
        until = self.wall_ms() + int(backoff_s * 1000)
        with store_errors("late poll"):
            self.redis.set(keys.late_backoff(name), until, px=int(backoff_s * 1000) + 1000)
        return PollOutcome.QUOTA

    def close(self) -> None:
        self.http.close()


def workspace_pollers(settings: Settings, client: SyncStore) -> list[ActivityPoller]:
    """A poller for each workspace with an App API key; `close` each when done."""
    return [
        ActivityPoller(
            client, settings.app, ws, AppClient(ws, timeout_s=settings.drain.upstream_timeout_s)
        )
        for ws in settings.workspaces
        if ws.app_api_key is not None
    ]
