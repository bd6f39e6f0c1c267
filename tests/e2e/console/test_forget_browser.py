"""Forgetting a person from the console, in a real headless Chromium, on the whole stack:
the operator fills the form, ticks the box, and every trace of the person leaves Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.support.browser import chromium, click_and_load, wait_for
from tests.support.forget import email, traces
from tests.support.stack import INGEST_KEY, SITE_ID, Stack

pytestmark = [pytest.mark.xdist_group("browser")]

ADMIN_KEY = "console-admin-key"
GONE, OTHER = "forget-me", "keep-me"


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


def test_a_person_forgotten_in_the_console_leaves_no_trace(
    make_stack: Callable[..., Stack], browser: WebDriver
) -> None:
    stack = make_stack(admin_keys=f"alice:{ADMIN_KEY}")
    stack.start_api()  # no worker: the jobs stay queued
    for person in (GONE, OTHER):
        r = httpx.put(
            f"{stack.api_url}/api/v1/customers/{person}",
            json={"email": email(person)},
            auth=(SITE_ID, INGEST_KEY),
            timeout=30,
        )
        assert r.status_code == 200, r.text
    store = stack.redis.client()
    assert traces(store, [GONE, email(GONE)])

    base = stack.api_url
    browser.delete_all_cookies()
    browser.get(f"{base}/console/sign-in")
    browser.find_element(By.ID, "key").send_keys(ADMIN_KEY)
    click_and_load(browser, By.CSS_SELECTOR, "form button[type=submit]")
    browser.get(f"{base}/console/forget")
    browser.find_element(By.ID, "person").send_keys(f"{GONE}\nemail:{email(GONE)}")
    browser.find_element(By.ID, "irreversible").click()
    click_and_load(browser, By.ID, "forget")

    digest = browser.find_element(By.ID, "forgotten").get_attribute("data-person") or ""
    assert digest.startswith("sha256:") and GONE not in browser.page_source
    removed = {
        li.get_attribute("data-name"): li.get_attribute("data-count")
        for li in browser.find_elements(By.CSS_SELECTOR, "#removed li")
    }
    assert removed["pending_jobs"] == "1"
    assert traces(store, [GONE, email(GONE)]) == {}
    assert traces(store, [OTHER, email(OTHER)])
    browser.get(f"{base}/console/audit")
    wait_for(browser, lambda d: digest in d.page_source)
