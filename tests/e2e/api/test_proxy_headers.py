"""Behind an ingress that terminates TLS: X-Forwarded-Proto/For count only from trusted proxies.

A real api process serves ``GET /api/v1/accounts/region``, whose ``url`` tells SDK clients
where to send; the test connects from 127.0.0.1 and claims to be an https proxy.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from service.config import Settings
from tests.support.processes import cioq_proc, free_port, wait_http

SITE_ID = "proxy-site"
INGEST_KEY = "proxy-ingest-key"
FORWARDED = {"x-forwarded-proto": "https", "x-forwarded-for": "203.0.113.7"}


def region_url(tmp_path: Path, redis_url: str, trusted_proxies: str | None) -> str:
    """The region answer's url from an api that trusts `trusted_proxies`."""
    port = free_port()
    env = {
        **os.environ,
        "CIOQ_REDIS_URL": redis_url,
        "CIOQ_SITE_ID": SITE_ID,
        "CIOQ_INGEST_KEYS": INGEST_KEY,
        "PORT": str(port),
        # uvicorn's own knob must not sneak trust back in: only CIOQ_TRUSTED_PROXIES counts.
        "FORWARDED_ALLOW_IPS": "127.0.0.1",
    }
    if trusted_proxies is not None:
        env["CIOQ_TRUSTED_PROXIES"] = trusted_proxies
    api = cioq_proc(f"api-{port}", ["api"], env, tmp_path)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        r = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/accounts/region",
            headers={**FORWARDED, "host": "cioq.example.com"},
            auth=(SITE_ID, INGEST_KEY),
        )
        assert r.status_code == 200, (r.text, api.log())
        url: str = r.json()["url"]
        return url
    finally:
        api.stop()


@pytest.mark.parametrize("trusted", ["127.0.0.1", "10.0.0.0/8,127.0.0.0/8"])
def test_a_trusted_proxy_makes_the_region_answer_https(
    tmp_path: Path, redis_url: str, trusted: str
) -> None:
    assert region_url(tmp_path, redis_url, trusted) == "https://cioq.example.com"


@pytest.mark.parametrize("trusted", [None, "10.0.0.1/32", "127.0.0.2"])
def test_an_untrusted_address_cannot_claim_https(
    tmp_path: Path, redis_url: str, trusted: str | None
) -> None:
    assert region_url(tmp_path, redis_url, trusted) == "http://cioq.example.com"


def test_trusted_proxies_must_be_addresses_or_networks() -> None:
    settings = Settings(trusted_proxies=" 10.0.0.0/8 , ::1,127.0.0.1")
    assert settings.listener.trusted_proxies == ("10.0.0.0/8", "::1", "127.0.0.1")
    with pytest.raises(ValueError, match="no address or network"):
        Settings(trusted_proxies="ingress-nginx")
