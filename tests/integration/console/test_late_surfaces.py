"""Late failures on every surface: the admin API, the console (list, overview column, one
failure), ``cioq late`` and ``/metrics`` show the same records, with the same filters; a
linked record's corrected call re-sent from the admin API arrives once."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
import redis
from typer.testing import CliRunner

from cioq.cli import app as cli
from sandbox import SandboxConfig, create_sandbox_app
from service.api.app import create_app
from service.config import Settings
from tests.support.http_server import serve_in_thread
from tests.support.late import APP_KEY, Poller, drain, enqueue, event, identify, late_sandbox
from tests.support.triggers import RecordingTriggers

ADMIN_KEY = "ops-secret-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
BASE = "/admin/v1/workspaces/default/late-failures"
METRIC = re.compile(r"^cioq_late_failures_total\{([^}]*)\} (\S+)$", re.M)


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    with serve_in_thread(create_sandbox_app(SandboxConfig(app_rps=10))) as url:
        yield url


@pytest.fixture
def sandbox(sandbox_url: str) -> Iterator[httpx.Client]:
    yield from late_sandbox(sandbox_url)


@pytest.fixture
def settings(make_settings: Callable[..., Settings], sandbox_url: str) -> Settings:
    return make_settings(
        shards=1,
        track_url=sandbox_url,
        app_api_key=APP_KEY,
        app_url=sandbox_url,
        admin_keys=f"alice:{ADMIN_KEY}",
        late_poll_read_share=1.0,
        bulk_drain_budget_s=60,
    )


@pytest.fixture
def found(settings: Settings, redis_client: redis.Redis, sandbox: httpx.Client) -> dict[str, str]:
    """Three identifies from billing, two events from web and one call cioq did not send,
    all failed late and recorded; person → job id."""
    poller = Poller(settings, redis_client)
    ops = [(identify(n), "billing") for n in range(3)] + [(event(n), "web") for n in (3, 4)]
    ids = enqueue(redis_client, ops)
    assert drain(settings, redis_client) == 5
    stranger = {"batch": [identify(9)]}
    assert sandbox.post("/api/v2/batch", json=stranger, auth=("dev-site", "dev-api-key")).is_success
    assert poller.walk() == 6
    poller.close()
    return ids


@pytest.fixture
def api(settings: Settings, triggers: RecordingTriggers) -> Iterator[httpx.Client]:
    with (
        serve_in_thread(create_app(settings, triggers=triggers)) as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        yield client


@pytest.fixture
def cli_runner(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("CIOQ_REDIS_URL", redis_url)
    monkeypatch.setenv("CIOQ_SHARDS", "1")
    return CliRunner()


def _admin(api: httpx.Client, **query: str) -> list[dict[str, Any]]:
    r = api.get(BASE, params=query, headers=ADMIN)
    assert r.status_code == 200, r.text
    return list(r.json()["late_failures"])


def _console(api: httpx.Client, **query: str) -> list[str]:
    page = api.get("/console/late-failures", params=query)
    assert page.status_code == 200, page.text
    return re.findall(r'<tr data-id="([^"]+)">', page.text)


def _cli(runner: CliRunner, *args: str) -> list[dict[str, Any]]:
    result = runner.invoke(cli, ["late", "list", "--json", *args])
    assert result.exit_code == 0, result.output
    return [orjson.loads(line) for line in result.output.splitlines()]


def _metrics(api: httpx.Client) -> dict[tuple[str, str, str], float]:
    out: dict[tuple[str, str, str], float] = {}
    for labels, value in METRIC.findall(api.get("/metrics").text):
        got = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        assert got["workspace"] == "default"
        out[(got["lane"], got["producer"], got["type"])] = float(value)
    return out


def test_every_surface_shows_the_same_records_with_the_same_filters(
    found: dict[str, str], api: httpx.Client, cli_runner: CliRunner
) -> None:
    rows = _admin(api)
    assert {r["job_id"] for r in rows} == {*found.values(), None}
    by_person = {r["person"].split(",")[0]: r for r in rows}
    for person, job_id in found.items():
        assert by_person[f"id={person}"]["job_id"] == job_id
    assert api.post("/console/sign-in", data={"key": ADMIN_KEY}).status_code == 303
    ids = [r["id"] for r in rows]
    assert _console(api) == ids
    assert [r["id"] for r in _cli(cli_runner)] == ids
    for flt in ({"producer": "billing"}, {"type": "failed_event"}, {"lane": "unlinked"}):
        want = [r["id"] for r in _admin(api, **flt)]
        assert want and len(want) < len(ids)
        assert _console(api, **flt) == want
        args = [x for k, v in flt.items() for x in (f"--{k}", v)]
        assert [r["id"] for r in _cli(cli_runner, *args)] == want
    assert _metrics(api) == {
        ("track", "billing", "failed_attribute_change"): 3.0,
        ("track", "web", "failed_event"): 2.0,
        ("unlinked", "unlinked", "failed_attribute_change"): 1.0,
    }
    overview = api.get("/console/overview.json").json()["rows"]
    late = {row["lane"]: row["cells"]["late"] for row in overview}
    assert late["track"] == "5"
    one = api.get(f"/console/late-failures/default/{ids[0]}")
    assert one.status_code == 200 and rows[0]["reason"] in one.text
    show = cli_runner.invoke(cli, ["late", "show", ids[0]])
    assert show.exit_code == 0 and rows[0]["activity_id"] in show.output
    env = {"CIOQ_INGEST_KEYS": "billing:k-billing,web:k-web"}
    status = cli_runner.invoke(cli, ["status", "--by-producer", "--json"], env=env)
    assert status.exit_code == 0, status.output
    late = {r["producer"]: r["late_failures"] for r in map(orjson.loads, status.output.split())}
    assert late == {"billing": 3, "web": 2}


def test_a_fixed_payload_re_sent_from_the_admin_api_arrives_once(
    found: dict[str, str],
    api: httpx.Client,
    settings: Settings,
    redis_client: redis.Redis,
    sandbox: httpx.Client,
) -> None:
    (row,) = _admin(api, producer="billing", type="failed_attribute_change", lane="track")[:1]
    person = row["person"].split(",")[0].removeprefix("id=")
    fixed = {**row["payload"], "attributes": {"email": f"{person}+fixed@example.com"}}
    url = f"{BASE}/{row['id']}/resend"
    first = api.post(url, json={"payload": fixed}, headers=ADMIN)
    assert first.status_code == 200, first.text
    assert first.json()["job_id"] == row["job_id"]
    assert api.post(url, json={"payload": fixed}, headers=ADMIN).status_code == 409
    assert _admin(api, producer="billing")[0]["resent"]["who"] == "alice"
    sandbox.post("/_sandbox/late_failures", json={"rate": 0.0}).raise_for_status()
    assert drain(settings, redis_client) == 1
    received = sandbox.get("/_sandbox/received").json()["records"]
    fixed_email = f"{person}+fixed@example.com"
    assert [r["op"]["attributes"].get("email") for r in received].count(fixed_email) == 1
