"""Issue 22, acceptance 3: keyed sends, 4 producers each, ambiguous and 503 faults, a
worker SIGKILLed every 5 s, Redis SIGKILLed once and restarted from its AOF at the
``fsync`` level. Every send reaches the sandbox at most once; every one that did not is
dead-lettered once as ``ambiguous``; every producer of a send is given the same job; no
producer gets a 5xx, not even while Redis restarts (ingest waits for it, up to
``CIOQ_REDIS_OUTAGE_WAIT_S``).

Twice: with the api sending what it can itself (`service.lanes.app.inline`; Redis's
``appendfsync always`` confirms each write, so its notes need no ``WAITAOF``), and with
every send going through a worker.

Short form here (150 sends); ``scripts/never-twice`` runs 1,000.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx
import pytest

from tests.support.never_twice import run, summary, violations
from tests.support.stack import Stack

SENDS = 1000 if os.environ.get("CIOQ_NEVER_TWICE") == "full" else 150


@pytest.mark.parametrize("inline", [True, False], ids=["api-sends", "workers-send"])
def test_keyed_sends_reach_customerio_at_most_once_through_kills_and_a_redis_restart(
    make_stack: Callable[..., Stack], inline: bool
) -> None:
    stack = make_stack(
        upstream_timeout_s=1,
        shards=16,
        durability="fsync",
        redis_fsync="always",
        app_inline_sends=inline,
    )
    stack.start_api()
    stack.start_sweeper()
    evidence = run(stack, "nt", SENDS)
    print("\n" + summary(evidence))
    assert violations(evidence) == []
    assert evidence.kills >= 1 and evidence.redis_down[1] > 0
    api_sends = _api_sends(stack.api_url)
    assert api_sends > 0 if inline else api_sends == 0


def _api_sends(api_url: str) -> float:
    """App sends the api made itself (its own ``cioq_app_sends_total``)."""
    text = httpx.get(f"{api_url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("cioq_app_sends_total{")
    )
