"""The console's error pages over real HTTP: one table answers every refusal, as a page.

The console is a Starlette app; its unknown paths, wrong methods, oversized forms and
stale sessions must still read as the console's own pages, with its security headers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from service.api.app import create_app
from service.config import Settings
from service.console.app import MAX_FORM_BYTES
from tests.support.http_server import serve_in_thread
from tests.support.triggers import RecordingTriggers

ADMIN_KEY = "ops-secret-key"


@pytest.fixture
def client(
    make_settings: Callable[..., Settings], triggers: RecordingTriggers
) -> Iterator[httpx.Client]:
    settings = make_settings(admin_keys=f"alice:{ADMIN_KEY}")
    with (
        serve_in_thread(create_app(settings, triggers=triggers)) as url,
        httpx.Client(base_url=url, timeout=10, follow_redirects=False) as client,
    ):
        yield client


def _secured(response: httpx.Response) -> bool:
    return (
        "script-src 'self'" in response.headers["content-security-policy"]
        and response.headers["x-frame-options"] == "DENY"
        and response.headers["cache-control"] == "no-store"
    )


def test_unknown_paths_and_other_methods_are_the_console_not_found_page(
    client: httpx.Client,
) -> None:
    assert client.post("/console/sign-in", data={"key": ADMIN_KEY}).status_code == 303
    for response in (
        client.get("/console/nope"),
        client.post("/console/overview"),  # served for GET only
        client.get("/console/static/nope.js"),
    ):
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
        assert "<h1>Not found</h1>" in response.text
        assert _secured(response)


def test_static_files_are_served_with_the_security_headers(client: httpx.Client) -> None:
    for name, kind in (("console.css", "text/css"), ("console.js", "javascript")):
        response = client.get(f"/console/static/{name}")
        assert response.status_code == 200
        assert kind in response.headers["content-type"]
        assert _secured(response)


def test_a_form_over_the_cap_is_refused_before_it_is_read(client: httpx.Client) -> None:
    form = {"key": "x" * MAX_FORM_BYTES}
    response = client.post("/console/sign-in", data=form)
    assert response.status_code == 413
    assert "Form too large" in response.text
    assert _secured(response)


def test_a_signed_out_post_is_refused_and_a_signed_out_get_signs_in(
    client: httpx.Client,
) -> None:
    posted = client.post("/console/lanes", data={"action": "pause"})
    assert posted.status_code == 403 and "Signed out" in posted.text
    got = client.get("/console/audit")
    assert got.status_code == 303 and got.headers["location"] == "/console/sign-in"
    assert _secured(posted) and _secured(got)


def test_an_unknown_workspace_names_the_field(client: httpx.Client) -> None:
    client.post("/console/sign-in", data={"key": ADMIN_KEY})
    response = client.get("/console/dead-letters/nope/1-0")
    assert response.status_code == 404
    assert "<strong>workspace</strong>" in response.text


def test_a_trailing_slash_reaches_the_same_page(client: httpx.Client) -> None:
    """No redirect to an absolute URL: behind a proxy its scheme could be the wrong one."""
    response = client.get("/console/")
    assert response.status_code == 303
    assert response.headers["location"] == "/console/sign-in"
