"""The removers every forget runs, in order (`service.store.forget` says how to add one).

1. ``pending_jobs``: the person's pending jobs, from every lane's live and bulk shards. Each
   shard is read and changed under its lease, taken with a fencing token as a drain
   takes it (``lua/acquire.lua``): a drain holding the shard has what it read in hand
   and may be sending it, so forget waits for it to hand the shard back (a drain holds
   one for ``CIOQ_DRAIN_BUDGET_S`` at most; a dead worker's lease expires after
   ``CIOQ_LEASE_MS``). Holding the lease, forget finds the person's entries with a
   server-side substring search (``lua/forget_find.lua``), confirms each by the
   identifiers its kind names (`JobKind.subjects`), and deletes them by id in a script
   fenced by its token (``lua/forget_remove.lua``). No drain reads the shard in between,
   so none sends a removed job, and entries are deleted by id, so no one else's is lost.
2. ``dead_letters``: the person's letters, confirmed the same way.
3. ``app_outcomes``: the outcome records of the App jobs removed above, and any record
   whose body names an identifier (Customer.io may echo one back).
4. ``stored_answers``: Idempotency-Key answers and request markers whose key or value
   names an identifier (the key is the producer's, and may be the person's id).
5. ``audit_entries``: operator audit entries whose detail names an identifier.
6. ``late_failures``: the late failures found in Customer.io's activity log whose record
   holds a value equal to an identifier.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from service import keys
from service.errors import ConfigError, ShardsBusy
from service.jobs import (
    Traffic,
    job_kind,
    job_kind_of_field,
    lane_traits,
    registered_lanes,
    shard_for,
)
from service.store.connections import load_script, store_errors
from service.store.dead_letters import DeadLetter
from service.store.forget_run import ForgetRun, Remover
from service.store.late_failures import LateFailures
from service.store.late_forget import remove_person_failures
from service.store.sent_index import remove_person_async
from service.store.tombstones import job_subjects

#: Entries the server reads per search call: about 12 ms of Redis time each (2.5 s per
#: million entries on the loaded 2-core dev machine), so other clients wait no longer.
FIND_PAGE = 5000
#: Ids deleted per call.
DELETE_PAGE = 1000
#: How often forget tries again for a shard a drain holds.
BUSY_POLL_S = 0.02


def _candidates(run: ForgetRun, rows: list[Any]) -> tuple[list[bytes], list[str]]:
    """(ids of the person's jobs, App job ids among them) of found `rows`; the others only
    mention an identifier and stay (counted)."""
    ids: list[bytes] = []
    app_ids: list[str] = []
    for raw_id, flat in rows:
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        mine = False
        for name, payload in fields.items():
            kind = job_kind_of_field(name)
            if kind is not None and job_subjects(kind.name, payload) & run.person.values:
                mine = True
                if kind.at_most_once:
                    app_ids.append(str(orjson.loads(payload).get("id", "")))
        if mine:
            ids.append(raw_id)
        else:
            run.mentions_kept += 1
    return ids, app_ids


class StreamsRemover:
    """The person's pending jobs, every lane, live and bulk, under each shard's lease."""

    name = "pending_jobs"

    def _shards(self, run: ForgetRun) -> list[keys.ShardKeys]:
        ws, n = run.person.workspace, run.queue.shards
        if not registered_lanes():
            # Without the lanes' kinds nothing would match: refuse rather than find nothing.
            raise ConfigError("no lane is registered: import service.lanes.registry first")
        found: list[keys.ShardKeys] = []
        for lane in registered_lanes():
            routes_of = lane_traits(lane).person_routes
            if routes_of is None or run.all_shards:
                numbers = set(range(n))
            else:
                numbers = {
                    shard_for(ws, route, n)
                    for ident in run.person.identifiers
                    for route in routes_of(ident.type.value, ident.value)
                }
            found += [keys.shard_keys(ws, s, lane, t) for t in Traffic for s in sorted(numbers)]
        return found

    async def remove(self, run: ForgetRun) -> int:
        client = run.redis
        shards = self._shards(run)
        pipe = client.pipeline(transaction=False)
        for shard in shards:
            pipe.xlen(shard.stream)
        with store_errors("forget"):
            lengths = await pipe.execute()
        pending = [s for s, length in zip(shards, lengths, strict=True) if length]
        acquire = load_script(client, "acquire")
        # A drain hands a shard back within its budget; a dead one's lease expires.
        wait_ms = run.lease_ms + 1000 if run.wait_ms is None else run.wait_ms
        deadline = time.monotonic() + wait_ms / 1000
        removed = 0
        left: list[keys.ShardKeys] = []
        while pending:
            for shard in pending:
                with store_errors("forget"):
                    token = int(await acquire(keys=[shard.lease, shard.fence], args=[run.lease_ms]))
                if not token:
                    left.append(shard)
                    continue
                removed += await self._under_lease(run, shard, token)
            pending, left = left, []
            if pending:
                if time.monotonic() > deadline:
                    raise ShardsBusy(
                        f"{len(pending)} shard(s) stayed leased past {run.lease_ms} ms; "
                        "forget again (what was removed stays removed)"
                    )
                await asyncio.sleep(BUSY_POLL_S)
        return removed

    async def _under_lease(self, run: ForgetRun, shard: keys.ShardKeys, token: int) -> int:
        client = run.redis
        find = load_script(client, "forget_find")
        delete = load_script(client, "forget_remove")
        release = load_script(client, "release")
        removed = 0
        try:
            mine, app_ids = await _search(
                run, find, [shard.stream, shard.lease], str(token).encode()
            )
            for start in range(0, len(mine), DELETE_PAGE):
                page = mine[start : start + DELETE_PAGE]
                with store_errors("forget"):
                    done = int(
                        await delete(
                            keys=[shard.stream, shard.lease, shard.retry], args=[token, *page]
                        )
                    )
                if done < 0:  # cannot happen while the lease is ours; never remove blind
                    raise ShardsBusy(f"lost the lease of {shard.tag} while forgetting")
                removed += done
            run.notes.setdefault("app_job_ids", []).extend(app_ids)
        finally:
            with store_errors("forget"):
                # As a drain ends: the lease back, the trigger marker cleared.
                remaining = int(
                    await release(keys=[shard.lease, shard.trigger, shard.stream], args=[token, 0])
                )
        if remaining and run.triggers is not None:
            # A drain triggered while forget held the shard found it taken and left.
            triggers = run.triggers
            await asyncio.to_thread(
                lambda: triggers.send(
                    shard.workspace, shard.shard, lane=shard.lane, traffic=shard.traffic
                )
            )
        return removed


Confirm = Callable[[ForgetRun, list[Any]], tuple[list[bytes], list[str]]]


async def _search(
    run: ForgetRun, find: Any, lua_keys: list[str], token: bytes, confirm: Confirm = _candidates
) -> tuple[list[bytes], list[str]]:
    """Every entry of a stream that is the person's job, a page of reading at a time."""
    mine: list[bytes] = []
    app_ids: list[str] = []
    start = b"-"
    needles = run.person.needles
    while True:
        with store_errors("forget"):
            reply = await find(keys=lua_keys, args=[token, start, FIND_PAGE, *needles])
        if reply == -1:
            raise ShardsBusy(f"lost the lease of {lua_keys[0]} while forgetting")
        last, read, rows = reply
        ids, apps = confirm(run, rows)
        mine += ids
        app_ids += apps
        if int(read) < FIND_PAGE:
            return mine, app_ids
        start = b"(" + last


def _letters(run: ForgetRun, rows: list[Any]) -> tuple[list[bytes], list[str]]:
    """(ids of the person's letters, App job ids among them) of found letter `rows`."""
    ids: list[bytes] = []
    app_ids: list[str] = []
    for raw_id, flat in rows:
        letter = DeadLetter.from_fields(dict(zip(flat[::2], flat[1::2], strict=True)))
        if job_subjects(letter.kind, letter.payload) & run.person.values:
            ids.append(raw_id)
            if job_kind(letter.kind).at_most_once:
                app_ids.append(str(orjson.loads(letter.payload).get("id", "")))
        else:
            run.mentions_kept += 1
    return ids, app_ids


class DeadLettersRemover:
    """The person's dead letters (the letter's job names them)."""

    name = "dead_letters"

    async def remove(self, run: ForgetRun) -> int:
        client = run.redis
        stream = keys.dead_letters(run.person.workspace)
        find = load_script(client, "forget_find")
        remove = load_script(client, "remove_letters")
        found, app_ids = await _search(run, find, [stream], b"", _letters)
        run.notes.setdefault("app_job_ids", []).extend(app_ids)
        removed = 0
        for start in range(0, len(found), DELETE_PAGE):
            with store_errors("forget"):
                removed += int(await remove(keys=[stream], args=found[start : start + DELETE_PAGE]))
        return removed


async def _scan_keys(run: ForgetRun, pattern: str) -> list[bytes]:
    client = run.redis
    found: list[bytes] = []
    with store_errors("forget"):
        # A cluster client scans every primary.
        async for name in client.scan_iter(match=pattern, count=1000):
            found.append(name)
    return found


async def _delete_naming(run: ForgetRun, pattern: str, value_of: str | None) -> int:
    """Delete keys matching `pattern` whose name or value (a string, or hash field
    `value_of`) contains an identifier (JSON-escaped, as stored)."""
    client = run.redis
    names = await _scan_keys(run, pattern)
    needles = run.person.needles
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hget(name, value_of) if value_of else pipe.get(name)
    with store_errors("forget"):
        values = await pipe.execute() if names else []
    doomed = [
        name
        for name, value in zip(names, values, strict=True)
        if any(n in name or (value is not None and n in value) for n in needles)
    ]
    removed = 0
    for name in doomed:  # one by one: in a cluster they live in many slots
        with store_errors("forget"):
            removed += int(await client.delete(name))
    return removed


class AppOutcomesRemover:
    """Outcome records of the person's App jobs, and any naming an identifier."""

    name = "app_outcomes"

    async def remove(self, run: ForgetRun) -> int:
        client = run.redis
        ws = run.person.workspace
        removed = 0
        for job_id in dict.fromkeys(run.notes.get("app_job_ids", [])):
            if job_id:
                with store_errors("forget"):
                    removed += int(
                        await client.delete(
                            keys.app_outcome(ws, job_id), keys.app_outcome_ready(ws, job_id)
                        )
                    )
        pattern = keys.key_patterns(ws)["app_outcome"]
        return removed + await _delete_naming(run, pattern, "record")


class AnswersRemover:
    """Idempotency-Key answers and request markers that name an identifier."""

    name = "stored_answers"

    async def remove(self, run: ForgetRun) -> int:
        patterns = keys.key_patterns(run.person.workspace)
        removed = await _delete_naming(run, patterns["idempotency"], None)
        return removed + await _delete_naming(run, patterns["request_marker"], None)


def _any(run: ForgetRun, rows: list[Any]) -> tuple[list[bytes], list[str]]:
    """Every found row: an audit detail that contains an identifier names the person."""
    return [raw_id for raw_id, _ in rows], []


def _strings(value: Any) -> Iterator[str]:
    """Every string (and number, as text) anywhere in a decoded JSON value."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str | int) and not isinstance(value, bool):
        yield str(value)


def _naming(run: ForgetRun, rows: list[Any]) -> tuple[list[bytes], list[str]]:
    """Rows holding a JSON value equal to an identifier, anywhere in it: records cioq keeps
    as Customer.io wrote them (an activity names its customer in fields of its own)."""
    ids: list[bytes] = []
    for raw_id, flat in rows:
        values: set[str] = set()
        for raw in flat[1::2]:
            try:
                values.update(_strings(orjson.loads(raw)))
            except orjson.JSONDecodeError:
                continue
        if values & run.person.values:
            ids.append(raw_id)
        else:
            run.mentions_kept += 1
    return ids, []


class StreamRemover:
    """Entries of one of the workspace's streams that name the person (`confirm` says which)."""

    def __init__(self, name: str, stream: Callable[[str], str], confirm: Confirm) -> None:
        self.name = name
        self.stream = stream
        self.confirm = confirm

    async def remove(self, run: ForgetRun) -> int:
        client = run.redis
        stream = self.stream(run.person.workspace)
        find = load_script(client, "forget_find")
        remove = load_script(client, "remove_letters")
        found, _ = await _search(run, find, [stream], b"", self.confirm)
        removed = 0
        for start in range(0, len(found), DELETE_PAGE):
            with store_errors("forget"):
                removed += int(await remove(keys=[stream], args=found[start : start + DELETE_PAGE]))
        return removed


class LateFailureRemover:
    """Late failures whose activity or linked job names the person, with their re-send
    marks (`late_forget`), and the copies of their delivered jobs kept to link failures
    (`sent_index`)."""

    name = "late_failures"

    async def remove(self, run: ForgetRun) -> int:
        ws = run.person.workspace
        late = LateFailures(run.redis)
        removed = 0
        # One identifier a call: a person may have two of a type (two emails).
        for ident in run.person.identifiers:
            named = {ident.type.value: ident.value}
            removed += await remove_person_failures(late, ws, named)
            removed += await remove_person_async(run.redis, ws, named)
        return removed


#: What every forget removes, in this order (`service.store.forget.REMOVERS` starts as it).
DEFAULT_REMOVERS: tuple[Remover, ...] = (
    StreamsRemover(),
    DeadLettersRemover(),
    AppOutcomesRemover(),
    AnswersRemover(),
    # A repair's audit diff keeps payload values; the forget's own entry counts these.
    StreamRemover("audit_entries", lambda _: keys.audit(), _any),
    LateFailureRemover(),
    # Any activity record left that holds an identifier as a value, in fields the poller's
    # own reading does not know.
    StreamRemover("late_failures_named", keys.late_failures, _naming),
)
