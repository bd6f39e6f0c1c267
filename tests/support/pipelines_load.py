"""A Pipelines producer for end-to-end tests: ``/v1/batch`` bodies of (person, seq) calls.

Calls mix identify/track/page/screen; some carry the producer's own ``messageId`` and
``timestamp`` (which cioq must keep), the rest none (which cioq must stamp). Each call's
accept window (request sent → 2xx received) is kept, so the test can check a stamped
``timestamp`` against it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from tests.support.load import producer_limits

PAD = "p" * 300  # calls of ~500 bytes, so batches fill by bytes
PRODUCER_TIMESTAMP = "2026-01-02T03:04:05.678Z"
KINDS = ("identify", "track", "page", "screen")


@dataclass
class PipelinesProduced:
    accepted: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    #: (person, seq) → (sent_s, answered_s) of the request that carried it.
    windows: dict[tuple[str, int], tuple[float, float]] = field(default_factory=dict)
    #: (person, seq) → the messageId the producer sent, for calls that had one.
    own_ids: dict[tuple[str, int], str] = field(default_factory=dict)
    own_timestamps: set[tuple[str, int]] = field(default_factory=set)
    requests: int = 0

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.accepted.values())


def call(person: str, seq: int, kind: str, *, own_id: str | None, own_time: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"type": kind, "userId": person}
    payload = {"seq": seq, "pad": PAD}
    if kind == "identify":
        body["traits"] = payload
    else:
        body["properties"] = payload
        body["event" if kind == "track" else "name"] = "e2e"
    if own_id is not None:
        body["messageId"] = own_id
    if own_time:
        body["timestamp"] = PRODUCER_TIMESTAMP
    return body


def seq_of_call(call: dict[str, Any]) -> tuple[str, int]:
    bag = call["traits"] if call["type"] == "identify" else call["properties"]
    return call["userId"], int(bag["seq"])


def iso_seconds(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def produce_pipelines(
    api_url: str,
    ingest_key: str,
    people: Iterable[str],
    *,
    per_person: int,
    batch_calls: int = 10,
    concurrency: int = 32,
    seed: int = 11,
) -> PipelinesProduced:
    """Send `per_person` calls for each person in ``/v1/batch`` bodies, in order per person."""
    rng = random.Random(seed)
    result = PipelinesProduced()
    gate = asyncio.Semaphore(concurrency)
    limits = producer_limits(concurrency)
    auth = httpx.BasicAuth(ingest_key, "")
    async with httpx.AsyncClient(base_url=api_url, auth=auth, timeout=60, limits=limits) as client:

        async def one_person(person: str) -> None:
            for start in range(0, per_person, batch_calls):
                batch = []
                for seq in range(start, min(start + batch_calls, per_person)):
                    own_id = f"own-{person}-{seq}" if rng.random() < 0.3 else None
                    own_time = rng.random() < 0.2
                    batch.append(
                        call(person, seq, rng.choice(KINDS), own_id=own_id, own_time=own_time)
                    )
                    if own_id:
                        result.own_ids[(person, seq)] = own_id
                    if own_time:
                        result.own_timestamps.add((person, seq))
                async with gate:
                    sent_s = time.time()
                    r = await client.post("/v1/batch", json={"batch": batch})
                    answered_s = time.time()
                r.raise_for_status()
                result.requests += 1
                for c in batch:
                    key = seq_of_call(c)
                    result.accepted[person].append(key[1])
                    result.windows[key] = (sent_s, answered_s)

        await asyncio.gather(*(one_person(p) for p in people))
    return result
