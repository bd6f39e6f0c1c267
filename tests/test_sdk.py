"""The official `customerio` SDK, unchanged, talks to cioq over TLS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from customerio import CustomerIO

from tests.support.processes import wait_until
from tests.support.stack import INGEST_KEY, SITE_ID, Stack

pytestmark = pytest.mark.e2e


@pytest.fixture
def tls_stack(tmp_path: Path) -> Iterator[tuple[Stack, str]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path, ca_path = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    ca.cert_pem.write_to_path(str(ca_path))
    stack = Stack(tmp_path)
    try:
        env = {**stack.env, "CIOQ_TLS_CERT": str(cert_path), "CIOQ_TLS_KEY": str(key_path)}
        stack.start_api(env=env, scheme="https", verify=str(ca_path))
        stack.start_worker(concurrency=1, pool="solo")
        yield stack, str(ca_path)
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.close()


def test_sdk_calls_arrive_at_the_sandbox(
    tls_stack: tuple[Stack, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """identify, track, devices, suppress and batch from the SDK arrive as v2 operations."""
    stack, ca_path = tls_stack
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_path)  # how a user trusts a private CA
    cio = CustomerIO(SITE_ID, INGEST_KEY, host="127.0.0.1", port=stack.api_port, retries=0)
    cio.identify(id="sdk-1", email="sdk@example.com", plan="pro")
    cio.track(customer_id="sdk-1", name="purchased", data={"amount": 3})
    cio.add_device(customer_id="sdk/2", device_id="tok-1", platform="ios")
    cio.suppress(customer_id="sdk-3")
    cio.batch(
        [
            {
                "type": "person",
                "action": "identify",
                "identifiers": {"id": "sdk-4"},
                "attributes": {"via": "batch"},
            }
        ]
    )
    records = wait_until(
        lambda: len(stack.received()) >= 5 and stack.received(),
        timeout_s=60,
        what="the SDK's five operations",
    )
    ops = sorted(((r["op"]["identifiers"], r["op"]["action"]) for r in records), key=str)
    assert ops == sorted(
        [
            ({"id": "sdk-1"}, "identify"),
            ({"id": "sdk-1"}, "event"),
            ({"id": "sdk/2"}, "add_device"),
            ({"id": "sdk-3"}, "suppress"),
            ({"id": "sdk-4"}, "identify"),
        ],
        key=str,
    )
    by_action = {
        r["op"]["action"]: r["op"] for r in records if r["op"]["identifiers"]["id"] != "sdk-4"
    }
    assert by_action["identify"]["attributes"] == {"email": "sdk@example.com", "plan": "pro"}
    assert by_action["event"]["name"] == "purchased" and len(by_action["event"]["id"]) == 26
    assert by_action["add_device"]["device"]["token"] == "tok-1"
