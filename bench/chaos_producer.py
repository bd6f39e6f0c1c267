"""The chaos run's producer: paced jobs per person, in order, retried until acknowledged.

Both lanes are mixed: half the people are Track people (v2 ops in ``/api/v2/batch``),
half Pipelines people (calls in ``/v1/batch``). Each person's jobs carry a per-person
sequence number (``attributes.seq`` / ``properties.seq``) and go out one request at a
time, so the order cioq acknowledged them in is the sequence order. Only a
2xx counts as accepted. A 503 or a transport error is retried with the same ops; such
ops are remembered as *retried*, because a write that reached Redis just before the
error may be stored twice (the one way a producer retry can duplicate).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

OpId = tuple[str, int]

#: Longest pause between retries, whatever Retry-After says, so the load keeps coming.
MAX_RETRY_WAIT_S = 1.0


@dataclass
class Ledger:
    """What the producer knows: accepted ops (with send time), poison, retries, refusals."""

    accepted: dict[OpId, float] = field(default_factory=dict)
    poison: dict[OpId, str] = field(default_factory=dict)
    retried: set[OpId] = field(default_factory=set)
    statuses: dict[int, int] = field(default_factory=dict)
    transport_errors: int = 0
    rejected: list[str] = field(default_factory=list)
    requests: int = 0


class Pacer:
    """Spaces requests so ops leave at `rate_per_s` on average."""

    def __init__(self, rate_per_s: float) -> None:
        self.rate_per_s = rate_per_s
        self.next_s = time.monotonic()

    async def take(self, ops: int) -> None:
        now = time.monotonic()
        start = max(now, self.next_s)
        self.next_s = start + ops / self.rate_per_s
        if start > now:
            await asyncio.sleep(start - now)


def make_op(person: str, seq: int, rng: random.Random, poison: str | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {"seq": seq, "pad": "c" * rng.randrange(20, 400)}
    if poison is not None:
        attributes["sandbox_poison"] = poison
        return {
            "type": "person",
            "action": "event",
            "identifiers": {"id": person},
            "name": "chaos",
            "attributes": attributes,
        }
    if rng.random() < 0.3:
        return {
            "type": "person",
            "action": "identify",
            "identifiers": {"id": person},
            "attributes": attributes,
        }
    return {
        "type": "person",
        "action": "event",
        "identifiers": {"id": person},
        "name": "chaos",
        "attributes": attributes,
    }


def make_call(person: str, seq: int, rng: random.Random, poison: str | None) -> dict[str, Any]:
    """A Pipelines call; poison is always a whole-batch 400 (Pipelines names no item)."""
    properties: dict[str, Any] = {"seq": seq, "pad": "c" * rng.randrange(20, 400)}
    if poison is not None:
        properties["sandbox_poison"] = "400"
    elif rng.random() < 0.3:
        return {"type": "identify", "userId": person, "traits": properties}
    return {"type": "track", "userId": person, "event": "chaos", "properties": properties}


def is_pipelines_person(person: str) -> bool:
    return int(person[1:]) % 2 == 1


def plan(ops: int, people: int, seed: int) -> dict[str, list[int]]:
    """Request sizes (1..10 ops) per person, `ops` in all."""
    rng = random.Random(seed)
    sizes: dict[str, list[int]] = {f"c{i}": [] for i in range(people)}
    names = list(sizes)
    left = ops
    while left:
        n = min(left, rng.randint(1, 10))
        sizes[rng.choice(names)].append(n)
        left -= n
    return sizes


async def produce(
    api_url: str,
    auth: tuple[str, str],
    *,
    ops: int,
    people: int,
    rate_per_s: float,
    poison_share: float,
    seed: int,
    concurrency: int = 32,
) -> Ledger:
    """Send `ops` ops for `people` people; returns the ledger once every one was answered."""
    ledger = Ledger()
    pacer = Pacer(rate_per_s)
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    timeout = httpx.Timeout(30.0)

    async with httpx.AsyncClient(
        base_url=api_url, auth=auth, timeout=timeout, limits=limits
    ) as client:

        async def send(batch: list[dict[str, Any]], ids: list[OpId], path: str) -> None:
            while True:
                async with gate:
                    sent_s = time.time()
                    try:
                        r = await client.post(path, json={"batch": batch})
                    except httpx.TransportError:
                        ledger.transport_errors += 1
                        ledger.retried.update(ids)
                        await asyncio.sleep(0.2)
                        continue
                ledger.requests += 1
                ledger.statuses[r.status_code] = ledger.statuses.get(r.status_code, 0) + 1
                if r.status_code == 200:
                    for op_id in ids:
                        ledger.accepted[op_id] = sent_s
                    return
                if r.status_code == 503:
                    ledger.retried.update(ids)
                    wait_s = float(r.headers.get("retry-after", "1"))
                    await asyncio.sleep(min(wait_s, MAX_RETRY_WAIT_S))
                    continue
                ledger.rejected.append(f"{r.status_code} {r.text[:300]}")
                return

        async def one_person(person: str, sizes: list[int], rng: random.Random) -> None:
            seq = 0
            cdp = is_pipelines_person(person)
            make = make_call if cdp else make_op
            for size in sizes:
                batch: list[dict[str, Any]] = []
                ids: list[OpId] = []
                for _ in range(size):
                    poison = None
                    if rng.random() < poison_share:
                        poison = "207" if rng.random() < 0.7 and not cdp else "400"
                        ledger.poison[(person, seq)] = poison
                    batch.append(make(person, seq, rng, poison))
                    ids.append((person, seq))
                    seq += 1
                await pacer.take(size)
                await send(batch, ids, "/v1/batch" if cdp else "/api/v2/batch")

        sizes = plan(ops, people, seed)
        await asyncio.gather(
            *(
                one_person(person, person_sizes, random.Random(f"{seed}:{person}"))
                for person, person_sizes in sizes.items()
            )
        )
    return ledger
