"""The operator console in a real headless Chromium, against real processes.

The flows an operator runs (sign in, watch a paused backlog drain after resume, find a
dead letter by filter and replay it, purge by class) on the whole stack; producer values
that are hostile markup stay text in the DOM. Each page is saved at 1280x800 to
docs/screenshots/ (docs/dead-letters-and-console.md, "Operator console").
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import redis
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from service import keys
from service.api.app import create_app
from service.config import Settings
from service.lanes.track.jobs import v2_job
from service.store.dead_letters import DeadLetter, DeadLetterStore
from tests.support.browser import chromium, click_and_load, screenshot, wait_for
from tests.support.http_server import serve_in_thread
from tests.support.processes import wait_until
from tests.support.stack import INGEST_KEY, SITE_ID, Stack
from tests.support.streams import stream_entries, stream_fields
from tests.support.triggers import RecordingTriggers

pytestmark = [pytest.mark.xdist_group("browser")]

ADMIN_KEY = "console-admin-key"
EVENT_ID = "01JD5Z8K3M4N6P7Q8R9S0TVWXY"
XSS = '<script>window.__xss=1</script>"><img src=x onerror=window.__xss=2>javascript:alert(1)'


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


def _cell(driver: WebDriver, name: str, lane: str = "default/track") -> str:
    return str(
        driver.find_element(By.CSS_SELECTOR, f'tr[data-lane="{lane}"] [data-cell="{name}"]').text
    )


def _sign_in(driver: WebDriver, base: str, key: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{base}/console/sign-in")
    driver.find_element(By.ID, "key").send_keys(key)
    click_and_load(driver, By.CSS_SELECTOR, "form button[type=submit]")


def _letter(person: str, cls: str, reason: str, status: int | None, message: str) -> DeadLetter:
    op = {
        "type": "person",
        "action": "identify",
        "identifiers": {"email": person},
        "attributes": {"plan": "pro", "bio": "x" * 40},
    }
    now_ms = int(time.time() * 1000)
    attempts = ((now_ms - 60_000, str(status or "crash")), (now_ms - 5_000, str(status or "crash")))
    return DeadLetter(
        "v2",
        v2_job(op).payload,
        "default:3:1-0",
        reason,
        cls,
        status,
        message=message,
        field="attributes.bio" if status else "",
        attempts=attempts,
        accepted_ms=now_ms - 90_000,
        dead_ms=now_ms,
    )


def _seed(client: redis.Redis) -> None:
    DeadLetterStore(client).add(
        "default",
        [
            _letter("ana@example.com", "invalid", "invalid_field", 400, "attribute value too long"),
            _letter("bo@example.com", "invalid", "invalid_field", 400, "attribute value too long"),
            _letter("cy@example.com", "invalid", "op_too_large", None, "op over 32768 bytes"),
            _letter("dee@example.com", "crash", "crash_loop", None, "worker died 3 times"),
            _letter("ed@example.com", "crash", "crash_loop", None, "worker died 3 times"),
        ],
    )


def _classes(client: redis.Redis) -> list[str]:
    return sorted(f[b"cls"].decode() for f in stream_fields(client, keys.dead_letters("default")))


def test_operator_flows_in_a_real_browser(
    make_stack: Callable[..., Stack], browser: WebDriver
) -> None:
    stack = make_stack(admin_keys=f"alice:{ADMIN_KEY}")
    stack.start_api()
    stack.start_sweeper()
    stack.start_worker(concurrency=1)
    base = stack.api_url
    store = stack.redis.client()
    ingest = httpx.Client(base_url=base, auth=(SITE_ID, INGEST_KEY), timeout=30)
    _seed(store)

    # An ingest key does not sign in; an admin key does.
    browser.delete_all_cookies()
    browser.get(f"{base}/console/sign-in")
    screenshot(browser, "sign-in")
    _sign_in(browser, base, INGEST_KEY)
    assert "not an admin key" in browser.find_element(By.ID, "refused").text
    assert browser.get_cookie("cioq_console") is None
    _sign_in(browser, base, ADMIN_KEY)
    wait_for(browser, lambda d: d.current_url.endswith("/console/overview"))
    assert "alice" in browser.find_element(By.CSS_SELECTOR, ".who").text

    # A dead letter made by a sandbox 207.
    poisoned = {
        "type": "person",
        "action": "event",
        "identifiers": {"id": "buyer-207"},
        "name": "order_placed",
        "id": EVENT_ID,
        "attributes": {"sandbox_poison": "207", "total": 42},
    }
    ingest.post("/api/v2/entity", json=poisoned).raise_for_status()
    wait_until(lambda: len(_classes(store)) == 6, timeout_s=60, what="the 207 dead letter")

    # Pause the lane by hand; a backlog builds and the overview shows it on its own.
    Select(browser.find_element(By.NAME, "workspace")).select_by_visible_text("default")
    browser.find_element(By.NAME, "reason").send_keys("Customer.io incident #4512")
    click_and_load(browser, By.CSS_SELECTOR, 'button[value="pause"]')
    wait_for(browser, lambda d: "Lane paused." in d.page_source)
    assert "paused by hand by alice" in _cell(browser, "state")
    ops = [
        {"type": "person", "action": "event", "identifiers": {"id": f"p{i}"}, "name": "seen"}
        for i in range(25)
    ]
    ingest.post("/api/v2/batch", json={"batch": ops}).raise_for_status()
    wait_for(browser, lambda d: _cell(d, "waiting") == "25")
    assert _cell(browser, "dead") == "6"
    # While paused, the running worker sends nothing: two refreshes later all 25 still wait.
    for _ in range(2):
        stamp: str = browser.find_element(By.ID, "updated").text

        def refreshed(d: Any, before: str = stamp) -> bool:
            return bool(d.find_element(By.ID, "updated").text != before)

        wait_for(browser, refreshed)
    assert _cell(browser, "waiting") == "25"
    assert stack.received() == []
    # Per-minute counts come from every process through Redis (service/metrics/activity.py);
    # a minute boundary may weigh part of them out, so only "some" is certain.
    wait_for(browser, lambda d: float(_cell(d, "accepted")) > 0)
    assert "207" in _cell(browser, "upstream")
    screenshot(browser, "overview")

    # Resume from elsewhere (the CLI): the page, never reloaded, counts down to 0.
    browser.execute_script("window.__same_page = 1")
    subprocess.run(
        [sys.executable, "-m", "cioq", "resume", "default", "--reason", "incident over"],
        env=stack.env,
        check=True,
        timeout=60,
    )
    wait_for(browser, lambda d: _cell(d, "waiting") == "0", timeout_s=90)
    assert _cell(browser, "state") == "delivering"
    assert browser.execute_script("return window.__same_page") == 1
    wait_for(browser, lambda d: float(_cell(d, "delivered")) > 0 and "200" in _cell(d, "upstream"))
    wait_until(lambda: len(stack.received()) >= 25, timeout_s=30, what="the backlog delivered")

    # Find the 207 letter by filter, open it, replay it with confirmation.
    stack.sandbox_client().post("/_sandbox/faults", json={"poison": False}).raise_for_status()
    browser.get(f"{base}/console/dead-letters")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#letters tbody tr[data-id]")) == 6
    screenshot(browser, "dead-letters")
    browser.find_element(By.NAME, "person").send_keys("buyer-207")
    click_and_load(browser, By.CSS_SELECTOR, "#filter-form button[type=submit]")
    rows = browser.find_elements(By.CSS_SELECTOR, "#letters tr[data-id]")
    assert len(rows) == 1
    assert "id=buyer-207" in rows[0].find_element(By.CSS_SELECTOR, ".person").text
    assert "207" in rows[0].text
    click_and_load(browser, By.CSS_SELECTOR, "a.open", within=rows[0])
    payload = browser.find_element(By.ID, "payload")
    assert EVENT_ID in payload.text and '"sandbox_poison": "207"' in payload.text
    assert browser.find_element(By.ID, "message").text == "poisoned"
    screenshot(browser, "dead-letter")
    click_and_load(browser, By.ID, "replay-one")
    matched = browser.find_element(By.ID, "matched")
    assert matched.get_attribute("data-matched") == "1"
    assert len(_classes(store)) == 6  # the dry run changed nothing
    screenshot(browser, "confirm")
    click_and_load(browser, By.ID, "confirm")
    result = browser.find_element(By.ID, "result")
    assert result.text == "1 queued again"
    screenshot(browser, "result")

    def replayed() -> bool:
        return any(r["op"].get("id") == EVENT_ID for r in stack.received())

    wait_until(replayed, timeout_s=60, what="the replayed event at the sandbox")

    # Purge by class removes only that class.
    assert _classes(store) == ["crash", "crash", "invalid", "invalid", "invalid"]
    browser.get(f"{base}/console/dead-letters?class=crash")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#letters tr[data-id]")) == 2
    click_and_load(browser, By.CSS_SELECTOR, 'button[value="purge-matching"]')
    matched = browser.find_element(By.ID, "matched")
    assert matched.get_attribute("data-matched") == "2" and "class = crash" in matched.text
    click_and_load(browser, By.ID, "confirm")
    assert browser.find_element(By.ID, "result").text == "2 purged"
    assert _classes(store) == ["invalid", "invalid", "invalid"]

    # Every action is in the audit list, with who did it.
    browser.get(f"{base}/console/audit")
    rows = browser.find_elements(By.CSS_SELECTOR, "#audit tbody tr")
    actions = [r.find_elements(By.TAG_NAME, "td")[2].text for r in rows]
    assert actions == ["purge", "replay", "resume", "pause"]
    who = [r.find_elements(By.TAG_NAME, "td")[1].text for r in rows]
    assert who[0] == who[1] == who[3] == "alice" and who[2].startswith("cli:")
    screenshot(browser, "audit")
    ingest.close()


@pytest.fixture
def hostile_console(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> Iterator[tuple[str, str]]:
    op = {
        "type": "person",
        "action": "event",
        "identifiers": {"id": XSS},
        "name": "evt" + XSS[:60],
        "attributes": {"note": XSS, "link": "javascript:alert(1)"},
    }
    letter = DeadLetter(
        "v2", v2_job(op).payload, "default:0:1-0", "invalid_field", "partial", 207, message=XSS
    )
    DeadLetterStore(redis_client).add("default", [letter])
    (letter_id,) = [
        i.decode() for i, _ in stream_entries(redis_client, keys.dead_letters("default"))
    ]
    settings = make_settings(admin_keys=f"alice:{ADMIN_KEY}")
    with serve_in_thread(create_app(settings, triggers=RecordingTriggers())) as url:
        yield url, letter_id


def _assert_nothing_ran(driver: WebDriver) -> None:
    assert driver.execute_script("return window.__xss === undefined") is True
    assert driver.execute_script("return document.querySelectorAll('img').length") == 0
    assert (
        driver.execute_script("return document.querySelectorAll('script:not([src])').length") == 0
    )
    hrefs = driver.execute_script(
        "return Array.from(document.querySelectorAll('a')).map(a => a.getAttribute('href'))"
    )
    assert not [h for h in hrefs if h.lower().startswith("javascript")]
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018  (reading it is what raises)


def test_hostile_producer_values_render_as_text(
    hostile_console: tuple[str, str], browser: WebDriver
) -> None:
    base, letter_id = hostile_console
    _sign_in(browser, base, ADMIN_KEY)
    wait_for(browser, lambda d: d.current_url.endswith("/console/overview"))
    browser.get(f"{base}/console/dead-letters")
    person = browser.find_element(By.CSS_SELECTOR, "#letters .person").text
    assert person == f"id={XSS}"
    assert browser.find_element(By.CSS_SELECTOR, "#letters .message").text == XSS
    _assert_nothing_ran(browser)
    browser.get(f"{base}/console/dead-letters/default/{letter_id}")
    assert browser.find_element(By.ID, "message").text == XSS
    assert browser.find_element(By.ID, "person").text == f"id={XSS}"
    assert XSS.replace('"', '\\"') in browser.find_element(By.ID, "payload").text
    _assert_nothing_ran(browser)
    # The filter echoes a hostile search back as text as well.
    browser.get(f"{base}/console/dead-letters?{urlencode({'person': XSS})}")
    _assert_nothing_ran(browser)
