"""A person's data in every place cioq keeps it, and a full-keyspace search for traces.

`traces` is the acceptance check of forget: it SCANs every key of the db and reads every
value whatever its type (strings, hashes, lists, sets, sorted sets, every stream entry),
so a remover that misses a place shows up here, whichever place it is.
"""

from __future__ import annotations

from typing import Any

import orjson

from service import keys
from service.jobs import Job, Lane, Traffic, new_event_id, shard_for
from service.lanes.app.jobs import app_job
from service.lanes.pipelines.jobs import cdp_job, cdp_route
from service.lanes.track.jobs import FIELD_OP, v2_job
from service.store.connections import load_script
from service.store.dead_letters import DeadLetter, DeadLetterStore


def person_id(i: int) -> str:
    # Fixed width: no person's id is part of another's.
    return f"fp{i:06d}"


def email(person: str) -> str:
    return f"{person}@example.com"


def track_op(person: str, seq: int) -> dict[str, Any]:
    return {
        "type": "person",
        "action": "event",
        "identifiers": {"id": person},
        "name": "viewed",
        "attributes": {"email": email(person), "seq": seq},
    }


def track_job(person: str, seq: int) -> Job:
    return v2_job(track_op(person, seq))


def pipelines_job(person: str, seq: int) -> Job:
    call = {
        "type": "track",
        "userId": person,
        "event": "viewed",
        "properties": {"seq": seq, "email": email(person)},
        "messageId": new_event_id(),
    }
    return cdp_job(call, route=cdp_route(call))


def app_send_job(person: str) -> Job:
    job_id = new_event_id()
    body = {"transactional_message_id": 3, "to": email(person), "identifiers": {"id": person}}
    return app_job(
        job_id, "/v1/send/email", body, limit="send", route=f"send:{job_id}", op_type="send_email"
    )


def person_shard(workspace: str, person: str, shards: int) -> int:
    return shard_for(workspace, f"person:id:{person}", shards)


def dump(client: Any, name: bytes) -> bytes:
    """Every value the key holds, as bytes, whatever its type (a bytes client: `Any`, as
    redis-py types replies for either decoding)."""
    kind = client.type(name).decode()
    parts: list[bytes] = [name]
    if kind == "string":
        parts.append(client.get(name) or b"")
    elif kind == "hash":
        for k, v in client.hgetall(name).items():
            parts += [k, v]
    elif kind == "list":
        parts += client.lrange(name, 0, -1)
    elif kind == "set":
        parts += list(client.smembers(name))
    elif kind == "zset":
        parts += [m for m, _ in client.zrange(name, 0, -1, withscores=True)]
    elif kind == "stream":
        last = b"-"
        while True:
            rows = client.xrange(name, min=last, count=10_000)
            for raw_id, fields in rows:
                parts.append(raw_id)
                for k, v in fields.items():
                    parts += [k, v]
            if len(rows) < 10_000:
                break
            last = b"(" + rows[-1][0]
    return b"\0".join(parts)


def traces(client: Any, needles: list[str]) -> dict[str, list[str]]:
    """Keys whose name or any value contains a needle: {key: [needles found]}."""
    wanted = [n.encode() for n in needles]
    found: dict[str, list[str]] = {}
    for name in client.scan_iter(count=1000):
        blob = dump(client, name)
        hits = [n.decode() for n in wanted if n in blob]
        if hits:
            found[name.decode()] = hits
    return found


def stream_people(
    client: Any, workspace: str, shards: int, traffic: Traffic = Traffic.LIVE
) -> dict[str, list[int]]:
    """Per person, the seqs of their Track jobs still queued, in stream order."""
    got: dict[str, list[int]] = {}
    for shard in range(shards):
        stream = keys.shard_keys(workspace, shard, Lane.TRACK, traffic).stream
        for _, fields in client.xrange(stream):
            op = orjson.loads(fields[FIELD_OP])
            got.setdefault(op["identifiers"]["id"], []).append(op["attributes"]["seq"])
    return got


def fill_backlog(
    client: Any, workspace: str, people: list[str], *, per_person: int, shards: int
) -> int:
    """Queue `per_person` Track jobs for each person with the store's own enqueue script,
    many jobs per call and many calls per round trip (a million in about a minute);
    returns how many. Seq order per person is stream order (a person has one shard)."""
    enqueue = load_script(client, "enqueue")
    by_shard: dict[int, list[bytes]] = {}
    stored = 0

    def flush(pipe: Any) -> None:
        for shard, payloads in by_shard.items():
            stream = keys.shard_keys(workspace, shard, Lane.TRACK).stream
            trigger = keys.shard_keys(workspace, shard, Lane.TRACK).trigger
            args: list[Any] = [1000, 60_000, "0", "", len(payloads)]
            for payload in payloads:
                args += [FIELD_OP, payload]
            # One part per call (lua/enqueue.lua's header: parts, then keys and args of each).
            enqueue(keys=[stream, trigger], args=[1, 2, len(args), *args], client=pipe)
        pipe.execute()
        by_shard.clear()

    pipe = client.pipeline(transaction=False)
    for seq in range(per_person):
        for person in people:
            shard = person_shard(workspace, person, shards)
            by_shard.setdefault(shard, []).append(track_job(person, seq).payload)
            stored += 1
            if stored % 20_000 == 0:
                flush(pipe)
    flush(pipe)
    return stored


def fill_letters(client: Any, workspace: str, people: list[str], seq: int = 10_000) -> int:
    """One dead letter per person (a 400 on a Track op)."""
    store = DeadLetterStore(client)
    for start in range(0, len(people), 1000):
        letters = [
            DeadLetter("v2", track_job(p, seq).payload, "", "invalid", "invalid", 400)
            for p in people[start : start + 1000]
        ]
        store.add(workspace, letters)
    return len(people)
