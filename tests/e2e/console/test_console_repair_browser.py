"""Repairing a dead letter in the console, in a real headless Chromium, on the whole stack.

A producer's identify carries a field the sandbox refuses (400) and is dead-lettered; the
operator opens it, sees Customer.io's error beside the payload, saves a fix that is still
invalid (refused, the field named, the text kept), then the right fix: it is replayed and
the sandbox accepts it exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from service import keys
from service.jobs import Lane, Traffic
from tests.support.browser import chromium, click_and_load, wait_for
from tests.support.processes import wait_until
from tests.support.stack import INGEST_KEY, SITE_ID, Stack
from tests.support.streams import stream_entries

pytestmark = [pytest.mark.xdist_group("browser")]

ADMIN_KEY = "console-admin-key"
SHARDS = 2
PERSON = "repair-me"


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


def _op(**attributes: Any) -> dict[str, Any]:
    return {
        "type": "person",
        "action": "identify",
        "identifiers": {"id": PERSON},
        "attributes": attributes,
    }


def _type_payload(driver: WebDriver, payload: dict[str, Any]) -> None:
    area = driver.find_element(By.ID, "repair-payload")
    area.clear()
    area.send_keys(orjson.dumps(payload).decode())


def _delivered(stack: Stack) -> list[dict[str, Any]]:
    return [
        r["op"]
        for r in stack.received()
        if r["kind"] == "v2" and r["op"].get("identifiers") == {"id": PERSON}
    ]


def test_a_letter_repaired_in_the_console_is_accepted_once(
    make_stack: Callable[..., Stack], browser: WebDriver
) -> None:
    stack = make_stack(admin_keys=f"alice:{ADMIN_KEY}", shards=SHARDS)
    stack.start_api()
    stack.start_sweeper()
    stack.start_worker(concurrency=1)
    store = stack.redis.client()
    dlq = keys.dead_letters("default")
    r = httpx.post(
        f"{stack.api_url}/api/v2/batch",
        json={"batch": [_op(plan="pro", sandbox_poison="400")]},
        auth=(SITE_ID, INGEST_KEY),
        timeout=30,
    )
    assert r.status_code == 200, r.text
    wait_until(lambda: store.xlen(dlq) == 1, timeout_s=60, what="the 400 dead-lettered")
    (letter_id,) = [i.decode() for i, _ in stream_entries(store, dlq)]

    base = stack.api_url
    browser.delete_all_cookies()
    browser.get(f"{base}/console/sign-in")
    browser.find_element(By.ID, "key").send_keys(ADMIN_KEY)
    click_and_load(browser, By.CSS_SELECTOR, "form button[type=submit]")
    browser.get(f"{base}/console/dead-letters/default/{letter_id}")
    click_and_load(browser, By.ID, "edit-one")

    # The payload as JSON, Customer.io's answer beside it.
    shown = orjson.loads(
        browser.find_element(By.ID, "repair-payload").get_attribute("value") or "null"
    )
    assert shown["attributes"] == {"plan": "pro", "sandbox_poison": "400"}
    assert "sandbox_poison" in browser.find_element(By.ID, "upstream-message").text

    # A fix that still breaks a rule comes back naming it; nothing is replayed.
    _type_payload(browser, {**_op(plan="pro"), "identifiers": {"id": ""}})
    click_and_load(browser, By.ID, "repair-save")
    errors = browser.find_elements(By.CSS_SELECTOR, "#repair-errors li")
    assert [e.get_attribute("data-field") for e in errors] == ["identifiers.id"]
    assert store.xlen(dlq) == 1

    _type_payload(browser, _op(plan="pro"))
    click_and_load(browser, By.ID, "repair-save")
    assert browser.find_element(By.ID, "repaired").get_attribute("data-id") == letter_id
    changes = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#changes li")]
    assert changes == ['-attributes.sandbox_poison: "400"']

    wait_until(lambda: _delivered(stack), timeout_s=60, what="the fixed op delivered")
    streams = [
        keys.shard_keys("default", shard, Lane.TRACK, traffic).stream
        for shard in range(SHARDS)
        for traffic in Traffic
    ]
    wait_until(
        lambda: sum(store.xlen(s) for s in streams) == 0, timeout_s=60, what="the queue drained"
    )
    assert [op["attributes"] for op in _delivered(stack)] == [{"plan": "pro"}]
    assert store.xlen(dlq) == 0
    browser.get(f"{base}/console/audit")
    wait_for(browser, lambda d: letter_id in d.page_source)
