"""Paced producers for live-traffic tests: steady mixed traffic, and timed live events.

`steady` keeps a fixed rate for a while, each person's jobs sent in order (a person
belongs to one producer coroutine, which awaits each request before the next), so the
sandbox can check exactly-once and per-person order as `tests.support.load` does.
`live_events` sends single events at a fixed rate and notes when each was accepted, so
a test can measure accept → Customer.io latency from the sandbox's records.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from tests.support.load import PAD, Produced, producer_limits

PEOPLE_PER_PRODUCER = 25


async def steady(
    api_url: str,
    auth: tuple[str, str],
    people: Sequence[str],
    *,
    rate_per_s: float,
    duration_s: float,
    v1_share: float = 0.2,
    tick_s: float = 0.1,
    seed: int = 11,
) -> Produced:
    """About `rate_per_s` jobs a second for `duration_s`, mixed v1 calls and v2 batches."""
    result = Produced()
    groups = [
        people[i : i + PEOPLE_PER_PRODUCER] for i in range(0, len(people), PEOPLE_PER_PRODUCER)
    ]
    per_tick = rate_per_s * tick_s / len(groups)
    limits = producer_limits(len(groups) + 4)
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=api_url, auth=auth, timeout=60, limits=limits) as client:

        async def producer(n: int, group: Sequence[str]) -> None:
            rng = random.Random(seed + n)
            seq = dict.fromkeys(group, 0)
            owed = 0.0
            tick = 0
            while True:
                due = started + tick * tick_s
                if due - started >= duration_s:
                    return
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                tick += 1
                owed += per_tick
                batch: list[tuple[str, int, dict[str, Any]]] = []
                while owed >= 1:
                    owed -= 1
                    person = rng.choice(group)
                    s = seq[person]
                    seq[person] += 1
                    if rng.random() < v1_share:
                        await _send(client, "/api/v2/batch", batch, result)
                        batch = []
                        r = await client.post(
                            f"/api/v1/customers/{person}/events",
                            json={"name": "live", "data": {"seq": s}},
                        )
                        r.raise_for_status()
                        result.requests += 1
                        result.accepted[person].append(s)
                        continue
                    op = {
                        "type": "person",
                        "action": "event",
                        "identifiers": {"id": person},
                        "name": "live",
                        "attributes": {"seq": s, "pad": PAD[:100]},
                    }
                    batch.append((person, s, op))
                await _send(client, "/api/v2/batch", batch, result)

        await asyncio.gather(*(producer(n, g) for n, g in enumerate(groups)))
    return result


async def _send(
    client: httpx.AsyncClient,
    path: str,
    batch: list[tuple[str, int, dict[str, Any]]],
    result: Produced,
) -> None:
    if not batch:
        return
    r = await client.post(path, json={"batch": [op for _, _, op in batch]})
    r.raise_for_status()
    result.requests += 1
    for person, s, _ in batch:
        result.accepted[person].append(s)


async def live_events(
    api_url: str,
    auth: tuple[str, str],
    *,
    rate_per_s: float,
    keep_going: Callable[[], bool],
    headers: dict[str, str] | None = None,
) -> dict[int, float]:
    """One event a tick while `keep_going()`; returns each seq's accept time (epoch s)."""
    accepted: dict[int, float] = {}
    started = time.monotonic()
    limits = producer_limits()
    async with httpx.AsyncClient(base_url=api_url, auth=auth, timeout=60, limits=limits) as client:

        async def one(seq: int) -> None:
            r = await client.post(
                f"/api/v1/customers/live-{seq % 50}/events",
                json={"name": "live-probe", "data": {"seq": seq}},
                headers=headers or {},
            )
            r.raise_for_status()
            accepted[seq] = time.time()

        pending: list[asyncio.Task[None]] = []
        seq = 0
        while keep_going():
            await asyncio.sleep(max(0.0, started + seq / rate_per_s - time.monotonic()))
            pending.append(asyncio.create_task(one(seq)))
            seq += 1
        await asyncio.gather(*pending)
    return accepted


def latencies_ms(records: list[dict[str, Any]], accepted: dict[int, float]) -> list[float]:
    """Accept → Customer.io, for each live probe the sandbox received, sorted; a probe sent
    again after a crash counts from its first arrival (when Customer.io had it)."""
    first: dict[int, float] = {}
    for record in records:
        op = record["op"]
        if op.get("name") == "live-probe":
            seq = int(op["attributes"]["seq"])
            if seq in accepted:
                first[seq] = min(first.get(seq, record["received_at"]), record["received_at"])
    return sorted((at - accepted[seq]) * 1000 for seq, at in first.items())


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
