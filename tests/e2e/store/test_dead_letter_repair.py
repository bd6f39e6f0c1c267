"""A 400 letter with a bad field, fixed (admin API, or ``cioq dlq edit`` in a real
$EDITOR), replayed and accepted by the sandbox exactly once."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from service import keys
from service.jobs import Lane, Traffic
from tests.support.processes import wait_until
from tests.support.stack import ADMIN_KEY, INGEST_KEY, SITE_ID, Stack

DLQ = keys.dead_letters("default")
SHARDS = 2


def _op(person: str, **attributes: Any) -> dict[str, Any]:
    return {
        "type": "person",
        "action": "identify",
        "identifiers": {"id": person},
        "attributes": attributes,
    }


def _dead_letter(stack: Stack, person: str) -> dict[str, Any]:
    """Send `person`'s identify with a field the sandbox refuses (400); its letter."""
    stack.start_worker(concurrency=1)
    redis = stack.redis.client()
    r = httpx.post(
        f"{stack.api_url}/api/v2/batch",
        json={"batch": [_op(person, plan="pro", sandbox_poison="400")]},
        auth=(SITE_ID, INGEST_KEY),
        timeout=30,
    )
    assert r.status_code == 200, r.text
    wait_until(lambda: redis.xlen(DLQ) == 1, timeout_s=60, what="the 400 dead-lettered")
    with _admin(stack) as admin:
        (letter,) = admin.get("").json()["dead_letters"]
    assert letter["status"] == 400 and "sandbox_poison" in letter["message"]
    found: dict[str, Any] = letter
    return found


def _admin(stack: Stack) -> httpx.Client:
    return httpx.Client(
        base_url=f"{stack.api_url}/admin/v1/workspaces/default/dead-letters",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=30,
    )


def _accepted_once(stack: Stack, person: str) -> None:
    """The fixed op reaches the sandbox, the queue drains, and it arrived exactly once."""
    redis = stack.redis.client()

    def ops() -> list[dict[str, Any]]:
        return [
            r["op"]
            for r in stack.received()
            if r["kind"] == "v2" and r["op"].get("identifiers") == {"id": person}
        ]

    wait_until(lambda: ops(), timeout_s=60, what="the fixed op delivered")
    streams = [
        keys.shard_keys("default", shard, Lane.TRACK, traffic).stream
        for shard in range(SHARDS)
        for traffic in Traffic
    ]
    wait_until(
        lambda: sum(redis.xlen(s) for s in streams) == 0, timeout_s=60, what="the queue drained"
    )
    (op,) = ops()
    assert op["attributes"] == {"plan": "pro"}
    assert redis.xlen(DLQ) == 0


def test_a_letter_fixed_through_the_admin_api_is_accepted_once(
    stack_with: Callable[..., Stack],
) -> None:
    stack = stack_with(shards=SHARDS)
    letter = _dead_letter(stack, "fix-api")
    payload = {**letter["payload"], "attributes": {"plan": "pro"}}
    with _admin(stack) as admin:
        still_bad = {**payload, "identifiers": {"id": ""}}
        refused = admin.patch(f"/{letter['id']}", json={"payload": still_bad})
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["field"] == "identifiers.id"
        fixed = admin.patch(f"/{letter['id']}", json={"payload": payload})
        assert fixed.status_code == 200, fixed.text
    _accepted_once(stack, "fix-api")


def test_a_letter_fixed_in_an_editor_is_accepted_once(
    stack_with: Callable[..., Stack], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cioq.cli import app

    stack = stack_with(shards=SHARDS)
    letter = _dead_letter(stack, "fix-cli")
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import json, sys\n"
        "p = json.load(open(sys.argv[1]))\n"
        "del p['attributes']['sandbox_poison']\n"
        "open(sys.argv[1], 'w').write(json.dumps(p))\n"
    )
    for name, value in stack.env.items():
        if name.startswith("CIOQ_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("EDITOR", f"{sys.executable} {editor}")
    result = CliRunner().invoke(app, ["dlq", "edit", letter["id"]])
    assert result.exit_code == 0, result.output
    assert "Customer.io: 400" in result.output  # its error, shown first
    assert '-attributes.sandbox_poison: "400"' in result.output
    _accepted_once(stack, "fix-cli")
