"""The seed Postman collection's Track, Pipelines and App API requests, run by newman against cioq.

The collection (tests/data/, Customer.io's own, unchanged) is pointed at cioq only
through its variables: trackUrl, siteId and apiKey (Track); cdpUrl and writeKey
(Pipelines, which the seed sends as Bearer; cioq takes Bearer and Basic ``key:``).
Every request must get a 2xx, and every operation must then arrive at the sandbox.

newman comes from the npm registry into .data/node on first use. Without npm the test is
skipped on a developer's machine, and fails in CI (CI set).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.installs import npm_install
from tests.support.paths import ROOT
from tests.support.processes import wait_until
from tests.support.stack import APP_KEY, CDP_KEY, INGEST_KEY, SITE_ID, Stack

COLLECTION = ROOT / "tests" / "data" / "customerio.postman_collection.json"
TRACK_FOLDERS = (
    "Track API - People",
    "Track API - Events",
    "Track API - Devices",
    "Track API - Segments",
    "Track API v2",
)


@pytest.fixture(scope="module")
def newman() -> Path:
    """The newman executable, installed into .data/node by npm when missing."""
    return npm_install() / ".bin" / "newman"


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    stack = make_stack()
    stack.start_api()
    stack.start_worker(concurrency=1, pool="solo")
    return stack


def _track_requests() -> int:
    collection = orjson.loads(COLLECTION.read_bytes())
    folders = [f for f in collection["item"] if f["name"] in TRACK_FOLDERS]
    assert [f["name"] for f in folders] == list(TRACK_FOLDERS)
    return sum(len(f["item"]) for f in folders)


def run_folders(
    newman: Path, folders: tuple[str, ...], variables: dict[str, str], tmp_path: Path
) -> list[tuple[str, int]]:
    """Run the collection's `folders` with `variables`; (request name, status) of each."""
    report = tmp_path / "newman.json"
    run = subprocess.run(
        [
            str(newman),
            "run",
            str(COLLECTION),
            *(arg for name in folders for arg in ("--folder", name)),
            *(arg for name, value in variables.items() for arg in ("--env-var", f"{name}={value}")),
            "--reporters",
            "cli,json",
            "--reporter-json-export",
            str(report),
            "--timeout-request",
            "30000",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    executions = orjson.loads(report.read_bytes())["run"]["executions"]
    return [(e["item"]["name"], e["response"]["code"]) for e in executions]


def test_postman_collection_track_requests(newman: Path, stack: Stack, tmp_path: Path) -> None:
    """All Track API requests of the collection: 2xx from cioq, then delivered upstream."""
    variables = {"trackUrl": stack.api_url, "siteId": SITE_ID, "apiKey": INGEST_KEY}
    answered = run_folders(newman, TRACK_FOLDERS, variables, tmp_path)
    assert len(answered) == _track_requests() == 10
    assert all(200 <= code < 300 for _, code in answered), answered

    records = wait_until(
        lambda: stack.received_at_least(len(answered)),
        timeout_s=90,
        what="the collection's operations at the sandbox",
    )
    v2 = sorted((r["op"]["action"], _ids(r["op"])) for r in records if r["kind"] == "v2")
    email = (("email", "user@example.com"),)
    assert v2 == sorted(
        [
            ("identify", email),  # PUT /customers/:identifier
            ("delete", email),
            ("event", email),
            ("add_device", email),
            ("delete_device", email),
            ("identify", email),  # /api/v2/entity
            ("identify", email),  # /api/v2/batch
        ]
    )
    v1 = sorted((r["op"]["method"], r["op"]["path"]) for r in records if r["kind"] == "v1")
    assert v1 == [
        ("POST", "/api/v1/events"),  # no anonymous_id: no v2 equivalent
        ("POST", "/api/v1/segments/1/add_customers"),
        ("POST", "/api/v1/segments/1/remove_customers"),
    ]
    assert {r["site_id"] for r in records} == {SITE_ID}


def _ids(op: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(op["identifiers"].items()))


PIPELINES_FOLDER = "Pipelines / CDP API"


def test_postman_collection_pipelines_requests(newman: Path, stack: Stack, tmp_path: Path) -> None:
    """The collection's Pipelines requests: 2xx from cioq, every call delivered upstream."""
    variables = {"cdpUrl": stack.api_url, "writeKey": INGEST_KEY}
    answered = run_folders(newman, (PIPELINES_FOLDER,), variables, tmp_path)
    assert len(answered) == 3
    assert all(200 <= code < 300 for _, code in answered), answered
    wait_until(
        lambda: len(stack.received()) >= 3,
        timeout_s=90,
        what="the collection's Pipelines calls at the sandbox",
    )
    records = stack.received()
    calls = sorted((r["op"]["type"], r["op"]["userId"], r["op"].get("event")) for r in records)
    assert calls == [
        ("identify", "user-123", None),
        ("track", "user-123", "Order Completed"),
        ("track", "user-123", "Page Viewed"),
    ]
    assert {(r["kind"], r["site_id"]) for r in records} == {("cdp", CDP_KEY)}
    assert all(r["op"]["messageId"] and r["op"]["timestamp"] for r in records)


APP_SEND_FOLDERS = ("App API - Transactional", "App API - Broadcasts")
APP_READ_FOLDERS = (
    "App API - Customers",
    "App API - Segments",
    "App API - Campaigns",
    "App API - Messages",
    "App API - Exports",
    "App API - Collections",
)


def test_postman_collection_app_api_requests(newman: Path, stack: Stack, tmp_path: Path) -> None:
    """The collection's App API folders (appUrl, appApiKey = an ingest key): every send and
    the broadcast trigger 2xx and recorded once; every read answered by the sandbox."""
    variables = {"appUrl": stack.api_url, "appApiKey": INGEST_KEY}
    answered = run_folders(newman, APP_SEND_FOLDERS + APP_READ_FOLDERS, variables, tmp_path)
    assert len(answered) == 4 + 14
    assert [a for a in answered if not 200 <= a[1] < 300] == []

    records = wait_until(
        lambda: len(stack.received()) >= 4 and stack.received(),
        timeout_s=90,
        what="the collection's sends at the sandbox",
    )
    sent = sorted((r["op"]["kind"], r["site_id"]) for r in records)
    assert sent == sorted(
        [("email", APP_KEY), ("push", APP_KEY), ("sms", APP_KEY), ("trigger", APP_KEY)]
    )
    [trigger] = [r["op"] for r in records if r["op"]["kind"] == "trigger"]
    assert trigger["broadcast_id"] == 1 and trigger["body"] == {"data": {"headline": "Big news"}}
    with stack.sandbox_client() as sandbox:
        log = sandbox.get("/_sandbox/requests").json()["records"]
    reads = [
        (e["method"], e["path"])
        for e in log
        if e["status"] == 200 and "/v1/send" not in e["path"] and "/triggers" not in e["path"]
    ]
    assert {e["site_id"] for e in log} == {APP_KEY}
    assert sorted(reads) == sorted(
        [
            ("POST", "/v1/customers"),
            ("GET", "/v1/customers/user@example.com/attributes"),
            ("GET", "/v1/customers/user@example.com/segments"),
            ("GET", "/v1/customers/user@example.com/messages"),
            ("GET", "/v1/segments"),
            ("POST", "/v1/segments"),
            ("GET", "/v1/campaigns"),
            ("GET", "/v1/campaigns/1"),
            ("GET", "/v1/campaigns/1/metrics"),
            ("GET", "/v1/messages"),
            ("POST", "/v1/exports/customers"),
            ("GET", "/v1/exports"),
            ("GET", "/v1/collections"),
            ("POST", "/v1/collections"),
        ]
    )
