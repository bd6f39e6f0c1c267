"""Queue many App API sends through a real stack and read back what became of each."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.processes import wait_until
from tests.support.stack import APP_KEY, INGEST_KEY, Stack

FINAL = {"delivered", "refused", "ambiguous", "dead"}


def send_body(tag: str, n: int) -> dict[str, Any]:
    """A send to a person of its own, carrying `n` so its arrivals can be counted."""
    return {
        "transactional_message_id": 9,
        "to": f"{tag}{n}@example.com",
        "identifiers": {"id": f"{tag}-{n}"},
        "message_data": {"n": n, "tag": tag},
    }


def queue_sends(stack: Stack, tag: str, count: int, *, workers: int = 8) -> list[str]:
    """POST `count` emails with ``Prefer: respond-async``; their job ids, in order."""
    headers = {"Authorization": f"Bearer {INGEST_KEY}", "Prefer": "respond-async"}
    with httpx.Client(base_url=stack.api_url, headers=headers, timeout=30) as api:

        def one(n: int) -> str:
            answer = api.post("/v1/send/email", json=send_body(tag, n))
            assert answer.status_code == 202, answer.text
            return str(answer.json()["job_id"])

        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(one, range(count)))


@dataclass
class Settled:
    outcomes: dict[str, dict[str, Any]]  # job id -> status URL record
    arrivals: Counter[int]  # n -> how many times the sandbox recorded it
    send_log: list[dict[str, Any]]  # the sandbox's log of send requests
    ambiguous_letters: dict[str, dict[str, Any]]  # job id -> dead letter


def settle(stack: Stack, tag: str, job_ids: list[str], *, timeout_s: float) -> Settled:
    """Wait until every job's outcome is final, then gather the evidence."""
    headers = {"Authorization": f"Bearer {INGEST_KEY}"}
    outcomes: dict[str, dict[str, Any]] = {}
    with httpx.Client(base_url=stack.api_url, headers=headers, timeout=30) as api:

        def all_final() -> bool:
            # Stops at the first job still open: polling must not load the stack it measures.
            for job_id in job_ids:
                if outcomes.get(job_id, {}).get("state") in FINAL:
                    continue
                answer = api.get(f"/cioq/v1/jobs/{job_id}")
                assert answer.status_code == 200, answer.text
                outcomes[job_id] = answer.json()
                if outcomes[job_id]["state"] not in FINAL:
                    return False
            return True

        wait_until(all_final, timeout_s=timeout_s, interval_s=0.5, what="every outcome final")
        letters = dead_letters(api, stack)
    arrivals: Counter[int] = Counter(
        r["op"]["body"]["message_data"]["n"]
        for r in stack.received()
        if r["kind"] == "app"
        and r["site_id"] == APP_KEY
        and r["op"]["body"].get("message_data", {}).get("tag") == tag
    )
    with stack.sandbox_client() as sandbox:
        log = sandbox.get("/_sandbox/requests", params={"limit": 100_000}).json()["records"]
    sends = [e for e in log if e["method"] == "POST" and e["path"].startswith("/v1/send/")]
    ambiguous = {
        letter["payload"]["id"]: letter
        for letter in letters
        if letter["class"] == "ambiguous" and letter["lane"] == "app"
    }
    return Settled(outcomes, arrivals, sends, ambiguous)


def dead_letters(api: httpx.Client, stack: Stack) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    after = None
    admin = {"Authorization": "Bearer dev-admin-key"}
    while True:
        params = {"limit": "1000", **({"after": after} if after else {})}
        page = api.get(
            "/admin/v1/workspaces/default/dead-letters", params=params, headers=admin
        ).json()
        found += page["dead_letters"]
        after = page.get("next_after")
        if not after:
            return found
