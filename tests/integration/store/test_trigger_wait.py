"""A broker that hangs slows no ingest answer past `CIOQ_TRIGGER_WAIT_MS` (`Queue._trigger`).

Without the wait, a request waited for its drain trigger as long as the broker's socket
timeout (10 s, measured against a broker that accepts and never answers): as long as the
official clients' own timeout, after which they send the stored call again. The broker here
is such a server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager

import pytest
import redis

from service import keys
from service import triggers as triggers_module
from service.config import Settings
from service.jobs import Job, Lane
from service.lanes.app.jobs import app_job
from service.store.connections import connect_async
from service.store.queue import Queue
from service.triggers import Trigger, Triggers
from tests.support.silent_server import SilentServer

#: The broker's socket timeout here (10 s in production): how long a send hangs.
HANG_S = 3.0
#: Eight times the 250 ms wait, and below `HANG_S`: a request that waited for the hung
#: send fails the test.
STALL_S = 2.0


class CountedTriggers(Triggers):
    """Real triggers, counting the sends the queue starts."""

    sends = 0

    async def send_all(self, triggers: Sequence[Trigger]) -> None:
        self.sends += 1
        await super().send_all(triggers)


@pytest.fixture
def broker() -> Iterator[SilentServer]:
    silent = SilentServer()
    yield silent
    silent.close()


@asynccontextmanager
async def _queue(settings: Settings) -> AsyncIterator[tuple[Queue, CountedTriggers]]:
    """A queue whose triggers go to `settings`' broker, closed with its clients."""
    client = connect_async(settings.redis)
    triggers = CountedTriggers(settings.redis.celery_broker_url)
    queue = Queue(client, settings.redis, settings.queue, triggers)
    try:
        yield queue, triggers
    finally:
        await queue.aclose()
        await triggers.aclose()
        await client.aclose()


def _send(n: int) -> Job:
    return app_job(
        f"job-{n}",
        "/v1/send/email",
        {"to": "a@example.com"},
        limit="transactional",
        route=f"person:id:p{n}",
        op_type="send_email",
    )


def test_a_hanging_broker_delays_no_answer_and_gets_one_send_until_it_ends(
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    broker: SilentServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The hung send ends sooner than after the 10 s a broker gets in production.
    monkeypatch.setitem(triggers_module._BROKER_OPTIONS, "socket_timeout", HANG_S)
    settings = make_settings(broker_url=f"redis://127.0.0.1:{broker.port}/0", shards=64)

    async def main() -> list[int]:
        took_s: list[float] = []
        sends: list[int] = []
        async with _queue(settings) as (queue, triggers):
            for n in range(3):
                started_s = time.monotonic()
                assert await queue.enqueue("default", [_send(n)]) == 1
                took_s.append(time.monotonic() - started_s)
                sends.append(triggers.sends)
            assert max(took_s) < STALL_S  # no request waited for the hung send
            stalled = list(queue._stalled)
            assert len(stalled) == 1
            broker.close()  # the hung send now times out, is refused on its retry, and ends
            await asyncio.wait_for(stalled[0], HANG_S * 5)
            assert not queue._stalled
            await queue.enqueue("default", [_send(3)])
            sends.append(triggers.sends)
        return sends

    sends = asyncio.run(main())
    # The first send hung; the next two requests sent none; once it ended, sends resumed.
    assert sends == [1, 1, 1, 2]
    stored = sum(
        redis_client.xlen(keys.shard_keys("default", shard, Lane.APP).stream) for shard in range(64)
    )
    assert stored == 4


def test_requests_in_the_first_wait_each_send_and_none_after_until_all_have_ended(
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    broker: SilentServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Requests that arrive together, before any send is known to hang, each send; then
    none sends until every hung send has ended (the last to end, not the first)."""
    monkeypatch.setitem(triggers_module._BROKER_OPTIONS, "socket_timeout", HANG_S)
    settings = make_settings(broker_url=f"redis://127.0.0.1:{broker.port}/0", shards=64)

    async def main() -> list[int]:
        sends: list[int] = []
        async with _queue(settings) as (queue, triggers):
            await asyncio.gather(*(queue.enqueue("default", [_send(n)]) for n in range(4)))
            sends.append(triggers.sends)
            await queue.enqueue("default", [_send(4)])
            sends.append(triggers.sends)
            stalled = list(queue._stalled)
            broker.close()
            await asyncio.wait_for(asyncio.gather(*stalled), HANG_S * 5)
            await queue.enqueue("default", [_send(5)])
            sends.append(triggers.sends)
        return sends

    sends = asyncio.run(main())
    assert sends[1] == sends[0] >= 1  # the fifth request, after them, sent nothing
    assert sends[2] == sends[1] + 1
