"""The worker's metrics endpoint sums every prefork child into one scrape."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import free_port, wait_http, wait_until
from tests.support.stack import INGEST_KEY, SITE_ID, Stack


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    s = make_stack(worker_metrics_port=free_port(), linger_ms=0)
    s.start_api()
    s.start_worker(concurrency=2, pool="prefork")
    return s


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = httpx.get(url, timeout=5).text
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def test_both_prefork_children_appear_in_one_scrape(stack: Stack) -> None:
    url = f"http://127.0.0.1:{stack.env['CIOQ_WORKER_METRICS_PORT']}/metrics"
    wait_http(url, timeout_s=60)
    main_pid = stack.workers[0].pid
    sent = 0

    def both_children_counted() -> dict[int, float]:
        nonlocal sent
        with httpx.Client(base_url=stack.api_url, auth=(SITE_ID, INGEST_KEY)) as api:
            for person in range(sent, sent + 16):
                r = api.post(f"/api/v1/customers/w{person}/events", json={"name": "n"})
                assert r.status_code == 200, r.text
        sent += 16
        samples = scrape(url)
        per_pid = {
            int(labels["pid"]): value
            for labels, value in samples.get("cioq_worker_process_drains", [])
            if value > 0
        }
        total = sum(v for _, v in samples.get("cioq_drains_total", []))
        if len(per_pid) >= 2 and sum(per_pid.values()) == total:
            return per_pid
        return {}

    per_pid = wait_until(
        both_children_counted, timeout_s=120, interval_s=0.5, what="drains from both children"
    )
    assert main_pid not in per_pid
    assert all(parent_pid(pid) == main_pid for pid in per_pid), per_pid
    samples = scrape(url)
    delivered = sum(v for _, v in samples.get("cioq_delivered_ops_total", []))
    batches = sum(v for _, v in samples.get("cioq_batch_ops_count", []))
    assert delivered > 0 and batches > 0
