"""The sweeper process expires dead letters past CIOQ_DEAD_LETTER_MAX_AGE_S and the api's
/metrics counts them: the acceptance of retention, on real processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from service import keys
from service.lanes.track.jobs import v2_job
from service.store.dead_letters import DeadLetter
from tests.support.processes import wait_until
from tests.support.stack import Stack
from tests.support.streams import stream_entries

MAX_AGE_S = 3600


def _expired_total(stack: Stack) -> float | None:
    scraped = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(httpx.get(f"{stack.api_url}/metrics").text)
        for s in family.samples
    }
    return scraped.get(("cioq_dead_letters_expired_total", (("workspace", "default"),)))


def test_the_sweeper_removes_exactly_the_letters_past_the_age_and_metrics_count_them(
    stack_with: Callable[..., Stack],
) -> None:
    stack = stack_with(dead_letter_max_age_s=MAX_AGE_S)
    store = stack.redis.client()
    dlq = keys.dead_letters("default")
    op = {"type": "person", "action": "identify", "identifiers": {"id": "p"}}
    fields: Any = DeadLetter("v2", v2_job(op).payload, "s", "invalid", "invalid", 400).to_fields()
    old_ms = int(time.time() * 1000) - 2 * MAX_AGE_S * 1000
    for seq in range(5):
        store.xadd(dlq, fields, id=f"{old_ms}-{seq}")
    young = [store.xadd(dlq, fields) for _ in range(2)]  # dead now
    wait_until(lambda: store.xlen(dlq) == 2, timeout_s=120, what="the 5 old letters expired")
    assert [i for i, _ in stream_entries(store, dlq)] == young
    wait_until(lambda: _expired_total(stack) == 5, timeout_s=30, what="the metric counts 5")
