"""Redis over TLS (``rediss://``): the certificate is verified for the store and the broker.

A redis-server of the test's own listens on a TLS port with a certificate from a trustme
CA. Given that CA (``CIOQ_REDIS_CA_FILE``), the store's clients and Celery's broker
connection work; given another CA, or none (the system's trust store), they are refused.
kombu's own default for ``rediss://`` without options is CERT_NONE, which would accept any
certificate: the refused cases are what fail without `broker_tls`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import trustme
from kombu.exceptions import OperationalError

from service.config import Settings
from service.jobs import Lane
from service.store.connections import connect_async, connect_metrics, connect_sync
from service.store.wire import Address, Wire
from service.triggers import DRAIN_QUEUE, Triggers
from tests.support.processes import RedisServer, free_port, wait_until
from workers.celery_app import create_celery


@dataclass(frozen=True)
class TlsRedis:
    server: RedisServer
    tls_port: int
    good_ca: Path
    wrong_ca: Path

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.tls_port}/0"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    tmp = tmp_path_factory.mktemp("tls-redis")
    ca, other = trustme.CA(), trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    other.cert_pem.write_to_path(str(tmp / "other-ca.pem"))
    tls_port = free_port()
    server = RedisServer(
        tmp / "data",
        extra=[
            *("--tls-port", str(tls_port)),
            *("--tls-cert-file", str(tmp / "server.pem")),
            *("--tls-key-file", str(tmp / "server.pem")),
            *("--tls-ca-cert-file", str(tmp / "ca.pem")),
            *("--tls-auth-clients", "no"),
        ],
    )
    try:
        yield TlsRedis(server, tls_port, tmp / "ca.pem", tmp / "other-ca.pem")
    finally:
        server.stop()


def settings_for(url: str, ca_file: Path | None, **extra: object) -> Settings:
    return Settings(
        redis_url=url,
        redis_ca_file=str(ca_file) if ca_file else None,
        redis_timeout_s=2,
        metrics_redis_timeout_s=2,
        **extra,
    )


def test_the_store_clients_connect_with_the_right_ca(tls_redis: TlsRedis) -> None:
    settings = settings_for(tls_redis.url, tls_redis.good_ca)
    for connect in (connect_sync, connect_metrics):
        client = connect(settings.redis)
        try:
            assert client.ping() is True
        finally:
            client.close()

    async def ping_async() -> bool:
        client = connect_async(settings.redis)
        try:
            return bool(await client.ping())
        finally:
            await client.aclose()

    assert asyncio.run(ping_async()) is True


@pytest.mark.parametrize("which", ["wrong CA", "system trust store"])
def test_the_store_clients_refuse_a_certificate_they_cannot_verify(
    tls_redis: TlsRedis, which: str
) -> None:
    ca = tls_redis.wrong_ca if which == "wrong CA" else None
    settings = settings_for(tls_redis.url, ca)
    for connect in (connect_sync, connect_metrics):
        client = connect(settings.redis)
        try:
            with pytest.raises(redis.ConnectionError) as refused:
                client.ping()
            assert caused_by(refused.value, ssl.SSLCertVerificationError), connect
        finally:
            client.close()

    async def ping_async() -> None:
        client = connect_async(settings.redis)
        try:
            await client.ping()
        finally:
            await client.aclose()

    with pytest.raises(redis.ConnectionError) as refused:
        asyncio.run(ping_async())
    assert caused_by(refused.value, ssl.SSLCertVerificationError)


def _wire_of(settings: Settings) -> Wire:
    """The ingest write path's connection, made as `Queue` makes it."""
    return Wire(Address.of(connect_async(settings.redis)))  # type: ignore[arg-type]


def test_the_write_path_connection_verifies_the_certificate(tls_redis: TlsRedis) -> None:
    async def write(settings: Settings) -> list[object]:
        wire = _wire_of(settings)
        try:
            return await wire.call([("SET", "over-tls", "yes")])
        finally:
            await wire.aclose()

    assert asyncio.run(write(settings_for(tls_redis.url, tls_redis.good_ca))) == [b"OK"]
    assert tls_redis.server.client().get("over-tls") == b"yes"
    with pytest.raises(redis.ConnectionError) as refused:
        asyncio.run(write(settings_for(tls_redis.url, tls_redis.wrong_ca)))
    assert caused_by(refused.value, ssl.SSLCertVerificationError)


def test_the_broker_delivers_triggers_over_verified_tls(tls_redis: TlsRedis) -> None:
    plain = tls_redis.server.client()
    plain.flushdb()
    settings = settings_for("redis://127.0.0.1:1/0", tls_redis.good_ca, broker_url=tls_redis.url)
    triggers = Triggers.for_settings(settings.redis)
    try:
        triggers.send("ws", 3, lane=Lane.TRACK)
        wait_until(lambda: plain.llen(DRAIN_QUEUE) == 1, timeout_s=10, what="the trigger")
    finally:
        triggers.close()
    # The worker's app (the consumer side) connects the same way.
    app = create_celery(settings)
    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1)
            assert conn.connected
    finally:
        app.close()


def test_the_broker_refuses_a_certificate_it_cannot_verify(tls_redis: TlsRedis) -> None:
    # Another database than the test above: kombu's process-wide producer pool is keyed
    # by URL, not by TLS options, so the same URL would reuse that test's connection.
    plain = redis.Redis(port=tls_redis.server.port, db=1)
    plain.flushdb()
    settings = settings_for(
        "redis://127.0.0.1:1/0", tls_redis.wrong_ca, broker_url=tls_redis.url[:-1] + "1"
    )
    app = create_celery(settings)
    try:
        with app.connection_for_write() as conn, pytest.raises(Exception) as refused:
            conn.ensure_connection(max_retries=1)
    finally:
        app.close()
    assert isinstance(refused.value, OperationalError)
    assert caused_by(refused.value, ssl.SSLCertVerificationError)
    triggers = Triggers.for_settings(settings.redis)
    try:
        with pytest.raises(OperationalError) as refused_send:
            triggers.send("ws", 3, lane=Lane.TRACK)
    finally:
        triggers.close()
    assert caused_by(refused_send.value, ssl.SSLCertVerificationError)
    assert plain.llen(DRAIN_QUEUE) == 0


def caused_by(exc: BaseException | None, kind: type[BaseException]) -> bool:
    """Whether `kind` is in `exc`'s chain of causes (kombu and redis-py wrap the SSL error)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, kind):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False
