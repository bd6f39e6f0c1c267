"""A real headless Chromium (Debian's chromium + chromium-driver) driven by Selenium.

`scripts/test` installs both packages when missing; without them the browser tests skip
locally and fail in CI. Pages are rendered at 1280x800, the size of the screenshots
docs/dead-letters-and-console.md shows (`docs/screenshots/`).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
WIDTH, HEIGHT = 1280, 800
T = TypeVar("T")


@contextmanager
def chromium() -> Iterator[WebDriver]:
    browser = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if browser is None or driver_path is None:
        if os.environ.get("CI"):
            raise RuntimeError("chromium and chromium-driver are required (scripts/test installs)")
        pytest.skip("chromium/chromedriver not installed (scripts/test installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",  # tests run as root in containers
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={WIDTH},{HEIGHT}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )
        yield driver
    finally:
        driver.quit()


def wait_for(driver: WebDriver, check: Callable[[WebDriver], T], timeout_s: float = 30) -> T:
    """Poll `check` in the browser until it returns something truthy."""
    result: T = WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(check)
    return result


def click_and_load(
    driver: WebDriver,
    by: str,
    value: str,
    *,
    within: WebElement | None = None,
    timeout_s: float = 30,
) -> None:
    """Find and click something that loads a new page; return once the new page has loaded.

    Waiting for an element both pages have would find the old page's (a filter submit
    returned the previous page's rows), so this waits for the old document to go stale.
    Chromium sometimes refuses a click on an element found a moment before ("does not belong
    to the document") without dispatching it: while the old document is still there, the
    element is found again and clicked again.
    """
    old = driver.find_element(By.TAG_NAME, "html")
    scope: WebDriver | WebElement = within if within is not None else driver
    deadline_s = time.monotonic() + timeout_s
    while True:
        try:
            scope.find_element(by, value).click()
            break
        except WebDriverException:
            if _stale(old):
                break  # the click went through and navigated
            if time.monotonic() > deadline_s:
                raise
    try:
        WebDriverWait(driver, timeout_s, poll_frequency=0.05).until(lambda _: _stale(old))
    except TimeoutException:
        raise AssertionError(
            f"no new page {timeout_s} s after clicking {value!r}: {_page_state(driver, by, value)}"
        ) from None
    wait_for(
        driver, lambda d: d.execute_script("return document.readyState") == "complete", timeout_s
    )


def _page_state(driver: WebDriver, by: str, value: str) -> object:
    """What the page says about a click that loaded nothing: where it is, and whether the
    clicked control's form would submit (a required field left empty blocks it)."""
    try:
        element = driver.find_element(by, value)
    except WebDriverException:
        return {"url": driver.current_url, "control": "gone"}
    return driver.execute_script(
        """
        const el = arguments[0], form = el.form;
        return {
          url: location.href,
          ready: document.readyState,
          invalid: form
            ? [...form.elements].filter((e) => !e.checkValidity()).map((e) => e.name)
            : null,
        };
        """,
        element,
    )


def _stale(element: WebElement) -> bool:
    try:
        element.is_enabled()
    except WebDriverException:  # stale, or a node of a document that is gone
        return True
    return False


def screenshot(driver: WebDriver, name: str) -> Path:
    """Save the viewport as ``docs/screenshots/<name>.png`` (1280x800)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    png = driver.get_screenshot_as_png()
    width = int.from_bytes(png[16:20], "big")
    height = int.from_bytes(png[20:24], "big")
    assert (width, height) == (WIDTH, HEIGHT), (name, width, height)
    path.write_bytes(png)
    return path
