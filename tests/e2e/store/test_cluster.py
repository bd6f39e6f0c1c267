"""cioq on a real 6-node Redis Cluster (3 primaries, 3 replicas) on loopback.

The store is the cluster (``CIOQ_REDIS_CLUSTER=true``), the broker the stack's own
standalone Redis. The same guarantees as on one Redis: every job once, in per-person
order, in batches within the limits.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.config import Settings
from service.errors import ConfigError
from service.store.connections import connect_sync
from service.store.startup_checks import check_sync
from tests.support.cluster import Cluster, reshard
from tests.support.load import Produced, Retried, produce, produce_retrying, received_by_person
from tests.support.processes import RedisServer, wait_until
from tests.support.scale import sized
from tests.support.stack import INGEST_KEY, SITE_ID, Stack
from tests.support.streams import stream_fields

pytestmark = [pytest.mark.xdist_group("cluster")]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    nodes = Cluster(tmp_path / "cluster")
    yield nodes
    nodes.stop()


def assert_exactly_once_in_order(stack: Stack, produced: Produced) -> None:
    got = received_by_person(stack.received())
    dupes = Counter((p, s) for p, seqs in got.items() for s in seqs)
    assert [k for k, n in dupes.items() if n > 1] == []
    assert {p: got.get(p, []) for p in produced.accepted} == dict(produced.accepted)


@pytest.mark.load
def test_a_backlog_on_a_cluster_arrives_once_in_order(
    make_stack: Callable[..., Stack], cluster: Cluster
) -> None:
    """Mixed v1/v2 jobs (3,000; 10,000 in the soak) through a cluster: once, in order, in limits."""
    stack = make_stack(cluster=cluster, shards=16)
    stack.start_api()
    stack.start_sweeper()
    people = [f"person-{i}" for i in range(sized(150, 500))]
    produced = asyncio.run(produce(stack.api_url, (SITE_ID, INGEST_KEY), people, per_person=20))
    assert produced.total == len(people) * 20
    # The shards' streams really are spread over the three primaries.
    holding = [n.client().dbsize() for n in cluster.primaries()]
    assert len(holding) == 3 and all(holding), holding
    # /metrics reads every primary's shards (a standalone client got MOVED and read none).
    scraped = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(httpx.get(f"{stack.api_url}/metrics").text)
        for s in family.samples
    }
    assert scraped[("cioq_queue_state_up", ())] == 1
    assert scraped[("cioq_backlog_entries", (("workspace", "default"),))] == produced.total
    stack.start_worker(concurrency=2)
    wait_until(
        lambda: len(stack.received()) >= produced.total,
        timeout_s=240,
        interval_s=0.5,
        what="all jobs at the sandbox",
    )
    assert_exactly_once_in_order(stack, produced)
    requests = [r for r in stack.requests() if r["path"] == "/api/v2/batch"]
    assert max(r["body_bytes"] for r in requests) <= 500_000
    assert sum(r["op_count"] for r in requests) / len(requests) > 50


PEOPLE = 60


def _batch(first: int) -> list[dict[str, object]]:
    return [
        {
            "type": "person",
            "action": "identify",
            "identifiers": {"id": f"pw-{first + i}"},
            "attributes": {"seq": 0},
        }
        for i in range(PEOPLE)
    ]


def _stored_people(cluster: Cluster, first: int) -> Counter[str]:
    """How many stored jobs each of the batch's people has, over every primary."""
    found: Counter[str] = Counter()
    wanted = {f"pw-{first + i}" for i in range(PEOPLE)}
    for node in cluster.primaries():
        client = node.client()
        for key in client.scan_iter("cioq:q:*"):
            for fields in stream_fields(client, key):
                person = orjson.loads(fields[b"o"])["identifiers"]["id"]
                if person in wanted:
                    found[person] += 1
    return found


@pytest.fixture
def slow_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster that takes 20 s to fail a node over, so a stopped node stays a primary."""
    nodes = Cluster(tmp_path / "cluster", node_timeout_ms=20_000)
    yield nodes
    nodes.stop()


def test_partial_write_is_completed_by_its_retry(
    make_stack: Callable[..., Stack], slow_cluster: Cluster
) -> None:
    """A request spanning all primaries, one unreachable for writes: 503; its retry completes it.

    The node is made unreachable with ``CLIENT PAUSE WRITE`` for longer than the api's
    Redis timeout: its part times out and is dropped with the connection, while a
    stopped process (SIGSTOP) would apply the stuck write once resumed, a write the
    client cannot know about either way, and which the request markers cover too.

    With an Idempotency-Key the retry stores exactly the missing parts. Without one it
    stores the whole request again: the parts on the reachable nodes are duplicated
    (docs/redis-cluster.md quotes the figure printed here).
    """
    stack = make_stack(
        cluster=slow_cluster, shards=16, redis_timeout_s=0.5, backlog_refresh_ms=600_000
    )
    stack.start_api()
    auth = (SITE_ID, INGEST_KEY)
    with httpx.Client(base_url=stack.api_url, auth=auth, timeout=30) as api:
        api.post("/api/v2/batch", json={"batch": _batch(1000)}).raise_for_status()  # warm-up
        answer_slot = "cioq:idem:{default}:k"
        victim = next(n for n in slow_cluster.primaries() if n != slow_cluster.node_of(answer_slot))
        outcomes: dict[str, tuple[int, int, int]] = {}
        for name, first, headers in (
            ("keyed", 0, {"Idempotency-Key": "k-1"}),
            ("unkeyed", 100, {}),
        ):
            paused = victim.client()
            paused.execute_command("CLIENT", "PAUSE", 20_000, "WRITE")
            try:
                failed = api.post("/api/v2/batch", json={"batch": _batch(first)}, headers=headers)
            finally:
                paused.execute_command("CLIENT", "UNPAUSE")
                paused.close()
            assert failed.status_code == 503, failed.text
            assert failed.headers["retry-after"]
            partial = sum(_stored_people(slow_cluster, first).values())
            retried = api.post("/api/v2/batch", json={"batch": _batch(first)}, headers=headers)
            assert retried.status_code == 200, retried.text
            stored = _stored_people(slow_cluster, first)
            outcomes[name] = (partial, sum(stored.values()), len(stored))
    print(f"partial write on a cluster (stored after 503, stored after retry, people): {outcomes}")
    partial, total, people = outcomes["keyed"]
    assert 0 < partial < PEOPLE, "the 503 left a partial request"
    assert (total, people) == (PEOPLE, PEOPLE), "the keyed retry completed it, nothing twice"
    partial, total, people = outcomes["unkeyed"]
    assert people == PEOPLE
    assert total - PEOPLE >= partial - PEOPLE // 2, "without a key the stored parts repeat"


@pytest.mark.load
@pytest.mark.parametrize("level", ["replicated", "write"])
def test_failover_of_a_primary_during_traffic(
    make_stack: Callable[..., Stack], tmp_path: Path, level: str
) -> None:
    """SIGKILL a primary while ingesting and draining; its replica takes over.

    Ingest answers only 2xx or 503 throughout. At ``replicated`` no acknowledged job is
    lost and per-person order holds; at ``write`` the loss is counted and printed
    (docs/redis-cluster.md quotes it). The killed node is restarted and rejoins as a replica,
    so ``replicated`` has a replica again for the promoted primary.
    """
    cluster = Cluster(tmp_path / "cluster", fsync="always")
    try:
        stack = make_stack(cluster=cluster, shards=16, durability=level, redis_timeout_s=1)
        stack.start_api()
        stack.start_sweeper()
        stack.start_worker(concurrency=2)
        people = [f"f-{i}" for i in range(100)]
        victim = cluster.node_of("cioq:q:{default:0}")

        async def traffic() -> Retried:
            producing = asyncio.create_task(
                produce_retrying(
                    stack.api_url, (SITE_ID, INGEST_KEY), people, per_person=sized(15, 30)
                )
            )
            await asyncio.to_thread(
                wait_until, lambda: len(stack.received()) > 300, timeout_s=120, what="draining"
            )
            victim.proc.kill()  # type: ignore[union-attr]
            await asyncio.to_thread(cluster.wait_failover, victim)
            await asyncio.to_thread(victim.start)  # rejoins as a replica
            return await producing

        produced = asyncio.run(traffic())
        assert set(produced.statuses) <= {200, 503}, produced.statuses
        if level == "replicated":
            wait_until(
                lambda: _received(stack) >= _acknowledged(produced),
                timeout_s=120,
                interval_s=0.5,
                what="every acknowledged job",
            )
        else:
            _settle(stack)
        got = received_by_person(stack.received())
        lost = sum(len(set(seqs) - set(got.get(p, []))) for p, seqs in produced.accepted.items())
        seen = dict(produced.statuses)
        print(
            f"failover at {level}: statuses {seen}, no answer {produced.transport_errors},"
            f" lost {lost} of {produced.total}"
        )
        if level == "replicated":
            assert lost == 0
            for person, seqs in produced.accepted.items():
                first_seen = list(dict.fromkeys(got[person]))
                assert first_seen == seqs, person
    finally:
        cluster.stop()


def _received(stack: Stack) -> set[tuple[str, int]]:
    return {(p, s) for p, seqs in received_by_person(stack.received()).items() for s in seqs}


def _acknowledged(produced: Produced) -> set[tuple[str, int]]:
    return {(p, s) for p, seqs in produced.accepted.items() for s in seqs}


def _settle(stack: Stack) -> None:
    """Wait until the sandbox stops receiving (at ``write`` some jobs may never come)."""
    last = -1

    def still() -> bool:
        nonlocal last
        now = len(stack.received())
        done = now == last
        last = now
        return done

    wait_until(still, timeout_s=120, interval_s=5.0, what="deliveries to settle")


@pytest.mark.load
def test_resharding_during_traffic(make_stack: Callable[..., Stack], cluster: Cluster) -> None:
    """``redis-cli --cluster reshard`` of every slot of a primary holding active shards.

    The shards' streams, leases and fences move with their slots, mid-ingest and
    mid-drain (MOVED and ASK on the way): nothing lost, nothing reordered.
    """
    stack = make_stack(cluster=cluster, shards=16)
    stack.start_api()
    stack.start_sweeper()
    stack.start_worker(concurrency=2)
    people = [f"r-{i}" for i in range(100)]
    source = cluster.node_of("cioq:q:{default:0}")
    target = next(n for n in cluster.primaries() if n is not source)
    before = {s: cluster.node_of(f"cioq:q:{{default:{s}}}").port for s in range(16)}

    async def traffic() -> Retried:
        producing = asyncio.create_task(
            produce_retrying(stack.api_url, (SITE_ID, INGEST_KEY), people, per_person=sized(15, 30))
        )
        await asyncio.to_thread(
            wait_until, lambda: len(stack.received()) > 300, timeout_s=120, what="draining"
        )
        slots = sum(
            int(end) - int(start) + 1
            for start, end, *_ in (
                row for row in source.client().cluster("slots") if row[2][1] == source.port
            )
        )
        assert not producing.done(), "the reshard starts while ingest runs"
        await asyncio.to_thread(reshard, cluster, source, target, slots)
        return await producing

    produced = asyncio.run(traffic())
    moved = [s for s in range(16) if cluster.node_of(f"cioq:q:{{default:{s}}}").port != before[s]]
    assert moved, "the reshard moved active shards"
    assert set(produced.statuses) <= {200, 503}, produced.statuses
    wait_until(
        lambda: _received(stack) >= _acknowledged(produced),
        timeout_s=120,
        interval_s=0.5,
        what="every acknowledged job",
    )
    got = received_by_person(stack.received())
    for person, seqs in produced.accepted.items():
        assert list(dict.fromkeys(got[person])) == seqs, person
    print(
        f"resharding: moved shards {moved}, statuses {dict(produced.statuses)},"
        f" no answer {produced.transport_errors}"
    )


def test_start_up_checks_every_primary_and_the_broker(cluster: Cluster, tmp_path: Path) -> None:
    """Cluster mode: each primary is checked; a cluster node as broker is refused."""
    broker = RedisServer(tmp_path / "broker")
    try:
        settings = Settings(
            redis_url=cluster.url, redis_cluster=True, broker_url=broker.url, durability="fsync"
        )
        client = connect_sync(settings.redis)
        with pytest.raises(ConfigError, match=r"primary 127\.0\.0\.1:\d+ has appendfsync everysec"):
            check_sync(client, settings.redis)
        for node in cluster.primaries():
            node.client().config_set("appendfsync", "always")
        verdict = check_sync(client, settings.redis.model_copy(update={"durability": "replicated"}))
        assert verdict.confirmation is not None and verdict.confirmation.replicas == 1
        other_node = f"redis://127.0.0.1:{cluster.nodes[1].port}/0"
        as_broker = settings.redis.model_copy(update={"broker_url": other_node})
        with pytest.raises(ConfigError, match="does not support Redis Cluster"):
            check_sync(client, as_broker)
        client.close()
    finally:
        broker.stop()
    with pytest.raises(ValueError, match="CIOQ_BROKER_URL naming a separate standalone"):
        Settings(redis_url=cluster.url, redis_cluster=True)
