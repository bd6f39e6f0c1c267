"""Late failures in the console, in a real headless Chromium, on the whole stack.

Two producers' identifies are accepted by the sandbox and fail afterwards; the operator sees
them on the overview's column and on the Late failures page (filtered by producer, each tied
to its job), the same records the admin API lists; one is fixed in the form and sent again,
and the sandbox receives the fix exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.support.browser import chromium, click_and_load, wait_for
from tests.support.processes import wait_until
from tests.support.stack import ADMIN_KEY, SITE_ID, Stack

pytestmark = [pytest.mark.xdist_group("browser")]

PRODUCERS = {"billing": "k-billing", "web": "k-web"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


def _identify(person: str, email: str) -> dict[str, Any]:
    return {
        "type": "person",
        "action": "identify",
        "identifiers": {"id": person},
        "attributes": {"email": email},
    }


def _admin(stack: Stack, **query: str) -> list[dict[str, Any]]:
    r = httpx.get(
        f"{stack.api_url}/admin/v1/workspaces/default/late-failures",
        params=query,
        headers=ADMIN,
        timeout=30,
    )
    r.raise_for_status()
    return list(r.json()["late_failures"])


def test_late_failures_are_shown_tied_to_their_jobs_and_one_is_fixed_and_sent_once(
    make_stack: Callable[..., Stack], browser: WebDriver
) -> None:
    stack = make_stack(
        admin_keys=f"alice:{ADMIN_KEY}",
        ingest_keys=",".join(f"{n}:{k}" for n, k in PRODUCERS.items()),
        late_poll_interval_s=1,
    )
    stack.start_api()
    stack.start_worker(concurrency=1)
    with stack.sandbox_client() as sandbox:
        late = {"rate": 1.0, "min_delay_s": 0.5, "max_delay_s": 1.0}
        sandbox.post("/_sandbox/late_failures", json=late).raise_for_status()
    stack.start_sweeper()
    wait_until(
        lambda: any(r["path"] == "/v1/activities" for r in stack.requests()),
        timeout_s=60,
        what="the poller's first walk",
    )
    for n, (producer, key) in enumerate(PRODUCERS.items()):
        ops = [_identify(f"{producer}-{i}", f"taken-{n}-{i}@example.com") for i in range(2)]
        r = httpx.post(
            f"{stack.api_url}/api/v2/batch",
            json={"batch": ops},
            auth=(SITE_ID, key),
            timeout=30,
        )
        assert r.status_code == 200, r.text
    rows = wait_until(
        lambda: (found := _admin(stack)) and len(found) == 4 and found,
        timeout_s=60,
        what="four late failures recorded",
    )
    assert all(r["linked"] for r in rows)
    with stack.sandbox_client() as sandbox:  # the fix must not fail again
        sandbox.post("/_sandbox/late_failures", json={"rate": 0.0}).raise_for_status()

    base = stack.api_url
    browser.delete_all_cookies()
    browser.get(f"{base}/console/sign-in")
    browser.find_element(By.ID, "key").send_keys(ADMIN_KEY)
    click_and_load(browser, By.CSS_SELECTOR, "form button[type=submit]")
    # The overview's column counts the Track lane's late failures.
    cell = browser.find_element(By.CSS_SELECTOR, 'tr[data-lane="default/track"] [data-cell="late"]')
    assert cell.text == "4"
    browser.get(f"{base}/console/late-failures?workspace=default&producer=billing")
    shown = browser.find_elements(By.CSS_SELECTOR, "#late-failures tbody tr[data-id]")
    billing = [r for r in rows if r["producer"] == "billing"]
    assert [e.get_attribute("data-id") for e in shown] == [r["id"] for r in billing]
    jobs = [e.find_element(By.CSS_SELECTOR, ".job").text for e in shown]
    assert jobs == [r["job_id"] for r in billing]

    target = billing[0]
    browser.get(f"{base}/console/late-failures/default/{target['id']}")
    assert browser.find_element(By.ID, "producer").text == "billing"
    assert browser.find_element(By.ID, "job").text == target["job_id"]
    area = browser.find_element(By.ID, "resend-payload")
    payload = orjson.loads(area.get_attribute("value") or "null")
    assert payload == target["payload"]
    person = payload["identifiers"]["id"]
    fixed = {**payload, "attributes": {"email": f"{person}@example.org"}}
    area.clear()
    area.send_keys(orjson.dumps(fixed).decode())
    click_and_load(browser, By.ID, "resend-save")
    wait_for(browser, lambda d: d.find_elements(By.ID, "resent-notice"))
    assert "alice" in browser.find_element(By.ID, "resent").text

    def fixes() -> list[dict[str, Any]]:
        return [
            r["op"]
            for r in stack.received()
            if r["kind"] == "v2" and r["op"]["attributes"].get("email") == f"{person}@example.org"
        ]

    wait_until(fixes, timeout_s=60, what="the fix delivered")
    browser.get(f"{base}/console/overview")  # a few more drains' time: nothing twice
    assert len(fixes()) == 1
    (again,) = [r for r in _admin(stack) if r["id"] == target["id"]]
    assert again["resent"]["who"] == "alice"
