"""The sweeper: re-sends drain triggers for every shard that has work and no drain.

Triggers are fire-and-forget, so one can be lost (broker restart, worker killed with a
countdown pending). Every `sweep_interval_ms` the sweeper looks at all shards in one
pipelined round trip per workspace and triggers any shard that has entries, no live
lease, no pending trigger, no pause and no retry wait. It holds no state: several
sweepers are safe, since the trigger marker is taken with SET NX. A bulk shard, or a
live one of a lane that holds a backlog (`is_backlog`, the drain's own rule) or a full
read, is triggered on the bulk queue, so what the sweeper finds never waits ahead of
live triggers.

It also removes dead letters past ``CIOQ_DEAD_LETTER_MAX_AGE_S``
(`service.store.dead_letter_retention`), at most once a `RETENTION_INTERVAL_S`: it is
the process that already runs on a period, holds no state (two sweepers removing the
same letters count each once) and is always deployed, while workers come and go with
the backlog and the api answers requests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from service import keys
from service.config import Settings
from service.jobs import Lane, Traffic, lane_traits
from service.store.connections import SyncStore
from service.store.dead_letter_retention import PASS_MAX_LETTERS, LetterRemover
from service.store.shard_state import look_at
from service.triggers import Triggers
from workers import liveness
from workers.drain.heads import is_backlog
from workers.drain.settings import Limits

log = logging.getLogger("cioq.sweeper")

#: How often the sweeper looks for dead letters past their age: a letter stays at most
#: this much longer than ``CIOQ_DEAD_LETTER_MAX_AGE_S``.
RETENTION_INTERVAL_S = 60.0


class Sweeper:
    def __init__(
        self,
        settings: Settings,
        client: SyncStore,
        triggers: Triggers,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.redis = client
        self.triggers = triggers
        self.clock = clock
        self.letters = LetterRemover(client)

    def sweep_once(self) -> list[tuple[str, int]]:
        """Trigger every shard that needs a drain; returns those triggered."""
        triggered: list[tuple[str, int]] = []
        for ws in self.settings.workspaces:
            for lane in ws.lanes:
                for traffic in Traffic:
                    triggered.extend(self._sweep_lane(ws.name, lane, traffic))
        return triggered

    def expire_dead_letters(self) -> tuple[int, bool]:
        """Remove every workspace's dead letters past their age, up to `PASS_MAX_LETTERS`
        each; returns how many, and whether a workspace may have more due."""
        max_age_s = self.settings.drain.dead_letter_max_age_s
        now_ms = int(self.clock() * 1000)
        removed, more = 0, False
        for ws in self.settings.workspaces:
            count = self.letters.expire(
                ws.name, now_ms=now_ms, max_age_s=max_age_s, max_read=PASS_MAX_LETTERS
            )
            removed += count
            more = more or count == PASS_MAX_LETTERS
        return removed, more

    def _sweep_lane(self, workspace: str, lane: Lane, traffic: Traffic) -> list[tuple[str, int]]:
        if int(self.redis.pttl(keys.pause(workspace, lane))) > 0:
            return []
        shards = [
            keys.shard_keys(workspace, shard, lane, traffic)
            for shard in range(self.settings.queue.shards)
        ]
        looks = look_at(self.redis, shards, triggers=True)
        now_ms = int(self.clock() * 1000)
        # The drain's rule (is_backlog), so a live drain never gets a shard it hands over.
        backlog = lane_traits(lane).batches and is_backlog(
            sum(look.length for look in looks), Limits.of(lane, self.settings)
        )
        due: list[tuple[int, bool]] = []
        for look in looks:
            busy = look.leased or look.triggered
            if look.length and not busy and look.not_before_ms <= now_ms:
                full = look.length >= self.settings.queue.max_ops_per_read
                due.append((look.shard.shard, backlog or full))
        if not due:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for shard, _ in due:
            pipe.set(
                keys.shard_keys(workspace, shard, lane, traffic).trigger,
                1,
                nx=True,
                px=self.settings.queue.trigger_ttl_ms,
            )
        sent: list[tuple[str, int]] = []
        for (shard, backlog), was_set in zip(due, pipe.execute(), strict=True):
            if was_set:
                self.triggers.send(workspace, shard, lane=lane, traffic=traffic, bulk=backlog)
                sent.append((workspace, shard))
        return sent

    def run(self, stop: threading.Event) -> None:
        """Sweep until `stop` is set; Redis or broker trouble is logged and retried."""
        interval_s = self.settings.drain.sweep_interval_ms / 1000
        retention_due_s = 0.0
        while not stop.is_set():
            try:
                sent = self.sweep_once()
                if sent:
                    log.info("re-triggered %d shard(s)", len(sent))
            except Exception:  # keep sweeping through outages; each pass is independent
                log.warning("sweep failed; retrying", exc_info=True)
            if self.clock() >= retention_due_s:
                retention_due_s = self.clock() + RETENTION_INTERVAL_S
                try:
                    expired, more = self.expire_dead_letters()
                    if expired:
                        log.info("removed %d dead letter(s) past their age", expired)
                    if more:  # cut short: the rest after this sweep, not in a minute
                        retention_due_s = 0.0
                except Exception:  # as a sweep: the next pass retries
                    log.warning("dead-letter retention failed; retrying", exc_info=True)
            liveness.beat()
            stop.wait(interval_s)
