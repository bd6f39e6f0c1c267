"""A keyed send whose store broke before anything was stored is stored by a second try in
ingest (idempotent by construction: the request markers store each part once), so the
producer gets 202, not a 503 it would resend; an unkeyed one still gets the 503."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio.client as async_client

from service.api.app import create_app
from service.config import Settings
from service.store.wire import Wire
from tests.support.app_send_path import EMAIL
from tests.support.http_server import serve_in_thread
from tests.support.triggers import RecordingTriggers

HEADERS = {"Authorization": "Bearer dev-ingest-key"}


class BreakFirstStore:
    """The store's first write (a lone EVALSHA, or a pipeline carrying one) fails with a
    reset before it is sent."""

    def __init__(self) -> None:
        self.broken = 0

    def _break(self, names: list[str]) -> None:
        if self.broken == 0 and "EVALSHA" in names:
            self.broken += 1
            raise redis.ConnectionError("Connection reset by peer (injected)")

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        pipeline_execute = async_client.Pipeline.execute
        execute_command = async_client.Redis.execute_command

        async def execute(pipe: Any, raise_on_error: bool = True) -> Any:
            self._break([str(item[0][0]) for item in pipe.command_stack])
            return await pipeline_execute(pipe, raise_on_error)

        async def command(client: Any, *args: Any, **options: Any) -> Any:
            self._break([str(args[0])])
            return await execute_command(client, *args, **options)

        async def call(wire: Wire, commands: Any, **options: Any) -> Any:
            self._break([str(c[0]) for c in commands])
            return await wire_call(wire, commands, **options)

        wire_call = Wire.call
        monkeypatch.setattr(async_client.Pipeline, "execute", execute)
        monkeypatch.setattr(async_client.Redis, "execute_command", command)
        monkeypatch.setattr(Wire, "call", call)


@pytest.fixture
def api(
    make_settings: Callable[..., Settings], app_sandbox_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[httpx.Client, BreakFirstStore]]:
    # What ingest stores, kept in the streams to be counted: no send of the api's own.
    settings = make_settings(
        app_api_key="dev-app-key",
        app_url=app_sandbox_url,
        app_send_wait_ms=0,
        app_inline_sends=False,
    )
    breaker = BreakFirstStore()
    with serve_in_thread(create_app(settings, triggers=RecordingTriggers())) as url:
        breaker.install(monkeypatch)
        with httpx.Client(base_url=url, headers=HEADERS, timeout=15) as client:
            yield client, breaker


def test_a_keyed_send_is_stored_by_a_second_try_after_a_broken_link(
    api: tuple[httpx.Client, BreakFirstStore], redis_client: redis.Redis
) -> None:
    client, breaker = api
    answer = client.post("/v1/send/email", json=EMAIL, headers={"Idempotency-Key": "k1"})
    assert breaker.broken == 1
    assert answer.status_code == 202, answer.text
    again = client.post("/v1/send/email", json=EMAIL, headers={"Idempotency-Key": "k1"})
    assert again.json()["job_id"] == answer.json()["job_id"]
    queued = [k for k in redis_client.scan_iter(match="cioq:q:*") if redis_client.xlen(k)]
    assert sum(redis_client.xlen(k) for k in queued) == 1


def test_an_unkeyed_send_after_a_broken_link_is_answered_503(
    api: tuple[httpx.Client, BreakFirstStore],
) -> None:
    client, breaker = api
    answer = client.post("/v1/send/email", json=EMAIL)
    assert breaker.broken == 1
    assert answer.status_code == 503 and answer.headers["retry-after"]
