"""The Celery app of the worker pods: one task, ``cioq.drain(workspace, shard, ...)``.

Celery only carries triggers here (see `service.triggers`); the jobs stay in Redis
streams. Per-process resources (Redis pool, HTTP clients) are built lazily in each
process, after prefork, never shared across a fork.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import billiard.pool
from celery import Celery, bootsteps
from celery.signals import worker_init, worker_shutdown, worker_shutting_down

from service.config import RedisSettings, Settings
from service.delivery.upstream import LaneClient
from service.jobs import Lane, Traffic, lane_named
from service.lanes.registry import clients
from service.metrics import definitions as metrics
from service.store.connections import connect_sync
from service.store.dead_letters import DeadLetterStore
from service.store.shards import ShardStore
from service.store.startup_checks import check_sync
from service.triggers import (
    DRAIN_TASK,
    Triggers,
    WorkerQueues,
    broker_tls,
    celery_config,
)
from workers import liveness
from workers.drain import Drainer, DrainerSettings

log = logging.getLogger("cioq.worker")

#: How long (x 0.1 s) a prefork child, told to stop, waits for the main process to have
#: read every result it sent. billiard 4.3 waits 300 tries (30 s), and under a warm
#: shutdown the main process can stop reading them: a SIGTERMed worker then outlives its
#: grace period (tests/unit/drain/test_pool_exit.py). No result needs reading here:
#: triggers are acked on receipt and a drain's work is in Redis, fenced.
billiard.pool.GUARANTEE_MESSAGE_CONSUMPTION_RETRY_LIMIT = 20


#: This worker run's token, drawn in the main process before the pool forks (children
#: inherit it). It names the stop flag: a flag named by pid alone, left behind by an
#: earlier worker whose pid the kernel reused, kept a new worker's processes "stopping"
#: and draining nothing.
_run_token = f"{os.getpid()}-{uuid.uuid4().hex}"


def stop_flag() -> Path:
    """The file whose presence tells this worker's processes to stop taking new batches."""
    return Path(tempfile.gettempdir()) / f"cioq-worker-stopping-{_run_token}"


#: `stop_flag` as a string, for the token it was built from: a drain asks before every
#: send, and building the path cost more than the stat.
_flag: tuple[str, str] = ("", "")


def _stopping() -> bool:
    # Prefork children learn of a warm shutdown through their parent's flag file; the
    # solo pool runs tasks in the main process itself.
    global _flag
    if _flag[0] != _run_token:
        _flag = (_run_token, str(stop_flag()))
    return os.path.exists(_flag[1])


class WorkerRuntime:
    """Builds a `Drainer` once per process, after fork, from what it reads: the Redis
    settings, the drain's settings, and the lanes' clients (built in each process: a
    forked child must not share its parent's connections)."""

    def __init__(
        self,
        redis: RedisSettings,
        drain: DrainerSettings,
        lane_clients: Callable[[], Mapping[tuple[str, Lane], LaneClient]],
        app: Celery,
    ) -> None:
        self.redis = redis
        self.drain = drain
        self.lane_clients = lane_clients
        self.app = app
        self._pid: int | None = None
        self._drainer: Drainer | None = None

    def drainer(self) -> Drainer:
        if self._drainer is None or self._pid != os.getpid():
            client = connect_sync(self.redis)
            # The in-flight note and dead letters are confirmed at the durability level
            # the API confirms jobs at (audit F5, F9).
            confirmation = check_sync(client, self.redis).confirmation
            shards, letters = ShardStore(client), DeadLetterStore(client)
            shards.confirmation = letters.confirmation = confirmation
            self._drainer = Drainer(
                self.drain,
                shards,
                letters,
                self.lane_clients(),
                Triggers(self.redis.celery_broker_url, app=self.app),
                should_stop=_stopping,
            )
            self._pid = os.getpid()
        return self._drainer


class ConsumerHeartbeat(bootsteps.StartStopStep):
    """Touches the worker's liveness file from the consumer's event-loop timer.

    The timer only fires while the loop that fetches triggers and hands them to the pool
    turns, so a wedged consumer stops the beats (the metrics thread would keep answering).
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.path = liveness.heartbeat_path("worker")
        self.timer_ref: Any = None

    def start(self, parent: Any) -> None:
        liveness.beat(self.path)
        self.timer_ref = parent.timer.call_repeatedly(
            liveness.WORKER_BEAT_INTERVAL_S, liveness.beat, (self.path,)
        )

    def stop(self, parent: Any) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None

    shutdown = stop


def create_celery(settings: Settings) -> Celery:
    """The worker's Celery app for `settings`, with the drain task registered."""
    app = Celery("cioq")
    app.conf.update(
        celery_config(settings.redis.celery_broker_url, broker_ssl=broker_tls(settings.redis))
    )
    app.conf.worker_soft_shutdown_timeout = settings.drain.shutdown_grace_s
    app.steps["consumer"].add(ConsumerHeartbeat)
    # Every lane is registered by now (service.lanes.registry is imported above), so the
    # drain's settings hold each lane's limits, as when they were read after the fork.
    runtime = WorkerRuntime(
        settings.redis, DrainerSettings.of(settings), lambda: clients(settings), app
    )

    @app.task(name=DRAIN_TASK, ignore_result=True)
    def drain(
        workspace: str,
        shard: int,
        lane: str = Lane.TRACK,
        traffic: str = Traffic.LIVE,
        bulk: bool = False,
    ) -> dict[str, Any]:
        # Triggers sent before lanes (or bulk traffic) existed carry fewer arguments.
        report = runtime.drainer().drain(
            workspace, int(shard), lane_named(lane), Traffic(traffic), bulk=bulk
        )
        metrics.drain_finished(workspace, report.stopped, report.lane)
        if report.requests or report.dead_lettered:
            log.info(
                "drained %s/%s/%s/%s: %d requests, %d delivered, %d dead-lettered, stopped: %s",
                workspace,
                lane,
                traffic,
                shard,
                report.requests,
                report.delivered,
                report.dead_lettered,
                report.stopped,
            )
        return {"stopped": report.stopped, "delivered": report.delivered}

    return app


@worker_init.connect
def _new_run(**_: Any) -> None:
    global _run_token
    _run_token = f"{os.getpid()}-{uuid.uuid4().hex}"


@worker_shutting_down.connect
def _raise_stop_flag(**_: Any) -> None:
    stop_flag().touch()


@worker_shutdown.connect
def _drop_stop_flag(**_: Any) -> None:
    stop_flag().unlink(missing_ok=True)


def worker_argv(
    *, concurrency: int, pool: str, loglevel: str, queues: WorkerQueues = WorkerQueues.ALL
) -> list[str]:
    """Arguments for `Celery.worker_main`: only drain triggers, no chatter between workers."""
    return [
        "worker",
        f"--queues={','.join(queues.names)}",
        f"--concurrency={concurrency}",
        f"--pool={pool}",
        f"--loglevel={loglevel}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
