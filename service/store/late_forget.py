"""Forgetting a person's late failures: every record that names them, and its re-send mark.

For a feature that forgets a person (issue 26): with `sent_index.remove_person_async`
(their delivered jobs kept for linking), this removes what cioq keeps of them for late
failures. The counts behind ``cioq_late_failures_total`` stay: they hold no personal data.
"""

from __future__ import annotations

import orjson

from service import keys
from service.store.late_failures import PAGE_SIZE, LateFailure, LateFailures, LateFilter, _call
from service.store.sent_index import SentJob


def _named(failure: LateFailure) -> set[tuple[str, str]]:
    """Every (identifier, value) the failure's activity or its job names (an email set as an
    attribute included)."""
    activity = failure.record.get("activity") or {}
    found: set[tuple[str, str]] = set()
    if activity.get("customer_id") not in (None, ""):
        found.add(("id", str(activity["customer_id"])))
    named = activity.get("customer_identifiers")
    if isinstance(named, dict):
        found |= {(str(k), str(v)) for k, v in named.items() if v not in (None, "")}
    job = failure.job
    if job is not None:
        copy = SentJob(
            str(job["id"]),
            str(job["kind"]),
            str(job["lane"]),
            str(job.get("producer") or ""),
            0,
            0,
            orjson.dumps(job["payload"]),
        )
        call = copy.call()
        if call is not None:
            found |= set(call.identifiers.items())
        # An identify's email attribute (Track) or trait (Pipelines) names the person too.
        payload = job["payload"] if isinstance(job["payload"], dict) else {}
        for part in ("attributes", "traits"):
            values = payload.get(part)
            if isinstance(values, dict) and values.get("email"):
                found.add(("email", str(values["email"])))
    return found


async def remove_person_failures(
    late: LateFailures, workspace: str, identifiers: dict[str, str]
) -> int:
    """Delete every record of `workspace` whose failure or job names any of `identifiers`
    (``{"id": "42", "email": "a@example.com"}``), and its re-send mark; returns how many."""
    wanted = {(k, str(v)) for k, v in identifiers.items() if v}
    doomed = [f.id async for f in late.scan(workspace, LateFilter()) if wanted & _named(f)]
    for start in range(0, len(doomed), PAGE_SIZE):
        chunk = doomed[start : start + PAGE_SIZE]
        await _call(late.redis.xdel(keys.late_failures(workspace), *chunk))
        await _call(late.redis.hdel(keys.late_resent(workspace), *chunk))
    return len(doomed)
