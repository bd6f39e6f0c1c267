"""A producer for end-to-end tests: mixed v1 and v2 jobs, each carrying (person, seq).

Every job names its person and a per-person sequence number, so the test can check at
the sandbox that each job arrived exactly once and in the order it was accepted.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

PAD = "p" * 300  # makes ops ~500 bytes, so batches fill by bytes


def producer_limits(max_connections: int | None = None) -> httpx.Limits:
    """Connection limits for the test producers.

    Idle connections expire before uvicorn's 5 s keep-alive closes them: on a starved
    machine, a request written to a connection the server is closing fails with
    httpx.ReadError (seen in the Track, Pipelines and live-traffic producers).
    """
    return httpx.Limits(max_connections=max_connections, keepalive_expiry=2.0)


@dataclass
class Produced:
    accepted: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    requests: int = 0

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.accepted.values())


def _v2(person: str, seq: int, kind: int) -> dict[str, Any]:
    ident = {"id": person}
    if kind == 0:
        return {
            "type": "person",
            "action": "identify",
            "identifiers": ident,
            "attributes": {"seq": seq, "pad": PAD},
        }
    return {
        "type": "person",
        "action": "event",
        "identifiers": ident,
        "name": "e2e",
        "attributes": {"seq": seq, "pad": PAD},
    }


async def _v1(client: httpx.AsyncClient, person: str, seq: int, kind: int) -> None:
    base = f"/api/v1/customers/{person}"
    if kind == 0:
        r = await client.put(base, json={"seq": seq, "pad": PAD})
    elif kind == 1:
        r = await client.post(f"{base}/events", json={"name": "e2e", "data": {"seq": seq}})
    elif kind == 2:
        r = await client.put(
            f"{base}/devices",
            json={
                "device": {
                    "id": f"tok-{person}-{seq}",
                    "platform": "ios",
                    "attributes": {"seq": str(seq)},
                }
            },
        )
    else:
        r = await client.delete(f"{base}/devices/tok-{person}-{seq}")
    r.raise_for_status()


async def produce(
    api_url: str,
    auth: tuple[str, str],
    people: Iterable[str],
    *,
    per_person: int,
    v2_share: float = 0.6,
    batch_ops: int = 50,
    concurrency: int = 48,
    seed: int = 7,
) -> Produced:
    """Send `per_person` jobs for each person, in order per person, people in parallel.

    v2 jobs go in `/api/v2/batch` requests of up to `batch_ops` ops, mixing people.
    """
    rng = random.Random(seed)
    result = Produced()
    people = list(people)
    plan = {
        p: [
            ("v2" if rng.random() < v2_share else "v1", rng.randrange(4)) for _ in range(per_person)
        ]
        for p in people
    }
    gate = asyncio.Semaphore(concurrency)
    limits = producer_limits(concurrency)
    async with httpx.AsyncClient(base_url=api_url, auth=auth, timeout=60, limits=limits) as client:

        async def one_person(person: str) -> None:
            pending: list[dict[str, Any]] = []
            seqs: list[int] = []

            async def flush() -> None:
                if pending:
                    async with gate:
                        r = await client.post("/api/v2/batch", json={"batch": pending})
                    r.raise_for_status()
                    result.requests += 1
                    result.accepted[person].extend(seqs)
                    pending.clear()
                    seqs.clear()

            for seq, (api, kind) in enumerate(plan[person]):
                if api == "v2":
                    pending.append(_v2(person, seq, kind % 2))
                    seqs.append(seq)
                    if len(pending) >= batch_ops:
                        await flush()
                    continue
                await flush()
                async with gate:
                    await _v1(client, person, seq, kind)
                result.requests += 1
                result.accepted[person].append(seq)
            await flush()

        await asyncio.gather(*(one_person(p) for p in people))
    return result


def seq_of(op: dict[str, Any]) -> tuple[str, int]:
    """(person, seq) of a v2 op as the sandbox recorded it."""
    person = op["identifiers"]["id"]
    action = op["action"]
    if action in ("identify", "event"):
        attrs = op.get("attributes") or {}
        return person, int(attrs["seq"])
    token = op["device"]["token"]
    return person, int(token.rsplit("-", 1)[1])


def received_by_person(records: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Per person, the seqs the sandbox received, in arrival order."""
    got: dict[str, list[int]] = defaultdict(list)
    for record in records:
        person, seq = seq_of(record["op"])
        got[person].append(seq)
    return dict(got)


@dataclass
class Retried(Produced):
    """What a retrying producer saw: every status, and the jobs acknowledged."""

    statuses: Counter[int] = field(default_factory=Counter)
    #: Requests that got no answer at all (connection closed under them); resent.
    transport_errors: int = 0


async def produce_retrying(
    api_url: str,
    auth: tuple[str, str],
    people: Iterable[str],
    *,
    per_person: int,
    concurrency: int = 32,
    give_up_s: float = 120.0,
) -> Retried:
    """One v2 op per request, in order per person, retried on 503 with its Idempotency-Key.

    A job counts as acknowledged at its first 2xx; a request still refused after
    `give_up_s` fails the producer, as does any status other than 2xx or 503.
    """
    result = Retried()
    gate = asyncio.Semaphore(concurrency)
    limits = producer_limits(concurrency)
    async with httpx.AsyncClient(base_url=api_url, auth=auth, timeout=30, limits=limits) as client:

        async def send(person: str, seq: int) -> None:
            deadline = asyncio.get_running_loop().time() + give_up_s
            body = {"batch": [_v2(person, seq, seq % 2)]}
            headers = {"Idempotency-Key": f"{person}-{seq}"}
            while True:
                async with gate:
                    try:
                        r = await client.post("/api/v2/batch", json=body, headers=headers)
                    except httpx.TransportError:
                        result.transport_errors += 1
                        # No answer: resent as a producer would; the Idempotency-Key keeps
                        # a request that was stored after all from being stored twice.
                        if asyncio.get_running_loop().time() > deadline:
                            raise
                        continue
                result.statuses[r.status_code] += 1
                if r.is_success:
                    result.requests += 1
                    result.accepted[person].append(seq)
                    return
                if r.status_code != 503 or asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"{r.status_code} for {person}#{seq}: {r.text}")
                await asyncio.sleep(0.2)

        async def one_person(person: str) -> None:
            for seq in range(per_person):
                await send(person, seq)

        await asyncio.gather(*(one_person(p) for p in people))
    return result
