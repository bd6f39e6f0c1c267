"""A broker that hangs slows no ingest answer past `CIOQ_TRIGGER_WAIT_MS` (`Queue._trigger`).

Without the wait, a request waited for its drain trigger as long as the broker's socket
timeout (10 s, measured against a broker that accepts and never answers): as long as the
official clients' own timeout, after which they send the stored call again. The broker here
is such a server."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence

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

#: The broker's socket timeout here (10 s in production): how long a send hangs.
HANG_S = 3.0
#: Eight times the 250 ms wait, and below `HANG_S`: a request that waited for the hung
#: send fails the test.
STALL_S = 2.0


class SilentBroker:
    """Accepts connections, reads nothing, answers nothing; `stop` closes them all."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.server.getsockname()[1]}/0"

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:  # stopped
                return
            self.connections.append(connection)

    def stop(self) -> None:
        self.server.close()
        for connection in self.connections:
            connection.close()


class CountedTriggers(Triggers):
    """Real triggers, counting the sends the queue starts."""

    sends = 0

    async def send_all(self, triggers: Sequence[Trigger]) -> None:
        self.sends += 1
        await super().send_all(triggers)


@pytest.fixture
def broker() -> Iterator[SilentBroker]:
    silent = SilentBroker()
    yield silent
    silent.stop()


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
    broker: SilentBroker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The hung send ends sooner than after the 10 s a broker gets in production.
    monkeypatch.setitem(triggers_module._BROKER_OPTIONS, "socket_timeout", HANG_S)
    settings = make_settings(broker_url=broker.url, shards=64)

    async def main() -> list[int]:
        client = connect_async(settings.redis)
        triggers = CountedTriggers(settings.redis.celery_broker_url)
        queue = Queue(client, settings.redis, settings.queue, triggers)
        took_s: list[float] = []
        sends: list[int] = []
        try:
            for n in range(3):
                started_s = time.monotonic()
                assert await queue.enqueue("default", [_send(n)]) == 1
                took_s.append(time.monotonic() - started_s)
                sends.append(triggers.sends)
            assert max(took_s) < STALL_S  # no request waited for the hung send
            stalled = list(queue._stalled)
            assert len(stalled) == 1
            broker.stop()  # the hung send now times out, is refused on its retry, and ends
            await asyncio.wait_for(stalled[0], HANG_S * 5)
            assert not queue._stalled
            await queue.enqueue("default", [_send(3)])
            sends.append(triggers.sends)
        finally:
            await queue.aclose()
            await triggers.aclose()
            await client.aclose()
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
    broker: SilentBroker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Requests that arrive together, before any send is known to hang, each send; then
    none sends until every hung send has ended (the last to end, not the first)."""
    monkeypatch.setitem(triggers_module._BROKER_OPTIONS, "socket_timeout", HANG_S)
    settings = make_settings(broker_url=broker.url, shards=64)

    async def main() -> list[int]:
        client = connect_async(settings.redis)
        triggers = CountedTriggers(settings.redis.celery_broker_url)
        queue = Queue(client, settings.redis, settings.queue, triggers)
        sends: list[int] = []
        try:
            await asyncio.gather(*(queue.enqueue("default", [_send(n)]) for n in range(4)))
            sends.append(triggers.sends)
            await queue.enqueue("default", [_send(4)])
            sends.append(triggers.sends)
            stalled = list(queue._stalled)
            broker.stop()
            await asyncio.wait_for(asyncio.gather(*stalled), HANG_S * 5)
            await queue.enqueue("default", [_send(5)])
            sends.append(triggers.sends)
        finally:
            await queue.aclose()
            await triggers.aclose()
            await client.aclose()
        return sends

    sends = asyncio.run(main())
    assert sends[1] == sends[0] >= 1  # the fifth request, after them, sent nothing
    assert sends[2] == sends[1] + 1
