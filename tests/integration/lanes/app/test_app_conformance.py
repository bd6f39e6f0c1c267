"""App API sends and triggers against an oracle built from Customer.io's App API reference.

tests/support/app_openapi.py holds the oracle. Positive mode: every send or trigger the
reference allows is accepted and stored as one App job, unless the refusal is on
docs/validation-rules.md's exception table; negative mode: every refusal is a 4xx naming
a field; never a 5xx. A fixed seed and a rotating one (printed; CIOQ_CONFORMANCE_SEED
replays it); CIOQ_CONFORMANCE_EXAMPLES examples per operation (default 10).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable

import pytest
import redis
from schemathesis.generation.modes import GenerationMode

from service import keys
from service.api.app import create_app
from service.config import Settings
from service.jobs import Lane
from tests.support import app_openapi
from tests.support.customerio_openapi import Tally, run_document
from tests.support.http_server import serve_in_thread
from tests.support.triggers import RecordingTriggers

EXAMPLES = int(os.environ.get("CIOQ_CONFORMANCE_EXAMPLES", "10"))
SEEDS = [28, int(os.environ.get("CIOQ_CONFORMANCE_SEED", random.randrange(2**32)))]
AUTH = "Bearer dev-ingest-key"

#: (field, rule) refusals a conforming send may get: docs/validation-rules.md, App rows.
EXCEPTIONS = {
    ("identifiers.id", "type"),  # an identifier "cannot be an empty string"
    ("identifiers.cio_id", "type"),
    ("identifiers.email", "email"),
    ("transactional_message_id", "type"),  # an integer id or a trigger *name*
}


def _run(
    make_settings: Callable[..., Settings],
    triggers: RecordingTriggers,
    mode: GenerationMode,
    seed_value: int,
    **overrides: object,
) -> Tally:
    print(f"seed {seed_value} (CIOQ_CONFORMANCE_SEED={seed_value} replays it)")
    # No worker runs: every accepted send is answered 202 at once, its job stored.
    settings = make_settings(app_api_key="app-key", app_send_wait_ms=0, **overrides)
    with serve_in_thread(create_app(settings, triggers=triggers)) as url:
        return run_document(
            app_openapi.DOCUMENT,
            url,
            AUTH,
            mode=mode,
            examples=EXAMPLES,
            seed_value=seed_value,
        )


def _stored(client: redis.Redis) -> int:
    return sum(
        int(client.xlen(keys.shard_keys("default", shard, lane).stream))
        for shard in range(4)
        for lane in (Lane.APP, Lane.BROADCASTS)
    )


@pytest.mark.parametrize("seed_value", SEEDS, ids=["fixed", "rotating"])
def test_conforming_sends_and_triggers_are_accepted_and_stored(
    seed_value: int,
    make_settings: Callable[..., Settings],
    triggers: RecordingTriggers,
    redis_client: redis.Redis,
) -> None:
    tally = _run(make_settings, triggers, GenerationMode.POSITIVE, seed_value)
    outside = [
        (label, status, body, answer)
        for label, status, body, answer in tally.refused
        if not (
            isinstance(answer, dict)
            and answer.get("errors")
            and all((e["field"], e["rule"]) in EXCEPTIONS for e in answer["errors"])
        )
    ]
    print("examples per operation:", dict(tally.calls), "accepted:", dict(tally.accepted))
    assert outside == []
    assert all(tally.accepted.values()) and len(tally.accepted) == 4
    assert _stored(redis_client) == sum(tally.accepted.values())


@pytest.mark.parametrize("seed_value", SEEDS, ids=["fixed", "rotating"])
@pytest.mark.parametrize("strict", [False, True], ids=["drop-in", "strict"])
def test_non_conforming_sends_are_refused_with_a_named_field(
    seed_value: int,
    strict: bool,
    make_settings: Callable[..., Settings],
    triggers: RecordingTriggers,
) -> None:
    tally = _run(
        make_settings, triggers, GenerationMode.NEGATIVE, seed_value, strict_validation=strict
    )
    assert sum(tally.calls.values()) > 0
    for label, status, body, answer in tally.refused:
        assert 400 <= status < 500, (label, status, body, answer)
        assert isinstance(answer, dict) and answer["errors"], (label, body, answer)
        assert any(e["field"] for e in answer["errors"]), (label, body, answer)
