"""The official `customerio` SDK, unchanged, talks to cioq over TLS."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import trustme
from customerio import CustomerIO
from customerio.constants import EMAIL, ID

from service.lanes.track.routes import TIMED_ACTIONS
from tests.support.processes import wait_until
from tests.support.stack import INGEST_KEY, SITE_ID, Stack


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


EVENT_ID = "01HZY0000000000000000000AA"


def _calls(cio: CustomerIO) -> None:
    """Every public Track method of the SDK, each on its own person so ops can be matched."""
    cio.identify(id="sdk-1", email="sdk@example.com", plan="pro")
    cio.track(
        customer_id="sdk-2", name="purchased", data={"amount": 3}, id=EVENT_ID, timestamp=1700000000
    )
    cio.track_anonymous(anonymous_id="anon-3", name="viewed", data={"page": "/"})
    cio.track_anonymous(anonymous_id=None, name="invited", data={"recipient": "r@example.com"})
    cio.pageview(customer_id="sdk-4", page="/pricing", ref="ad")
    cio.backfill(customer_id="sdk-5", name="signed_up", timestamp=1600000000, via="import")
    cio.delete(customer_id="sdk-6")
    cio.add_device(customer_id="sdk/7", device_id="tok-7", platform="ios", last_used=1700000000)
    cio.delete_device(customer_id="sdk/8", device_id="tok-8")
    cio.suppress(customer_id="cio_abc9")
    cio.unsuppress(customer_id="sdk10@example.com")
    cio.merge_customers(ID, "sdk-11", EMAIL, "old11@example.com")
    cio.batch(
        [
            {
                "type": "person",
                "action": "identify",
                "identifiers": {"id": "sdk-12"},
                "attributes": {"via": "batch"},
            },
            {
                "type": "object",
                "action": "delete",
                "identifiers": {"object_type_id": "1", "object_id": "acme"},
            },
        ]
    )


def _person(action: str, identifiers: dict[str, str], **fields: Any) -> dict[str, Any]:
    return {"type": "person", "action": action, "identifiers": identifiers, **fields}


EXPECTED_V2 = [
    _person("identify", {"id": "sdk-1"}, attributes={"email": "sdk@example.com", "plan": "pro"}),
    _person(
        "event",
        {"id": "sdk-2"},
        name="purchased",
        id=EVENT_ID,
        timestamp=1700000000,
        attributes={"amount": 3},
    ),
    _person("event", {"anonymous_id": "anon-3"}, name="viewed", attributes={"page": "/"}),
    _person("page", {"id": "sdk-4"}, name="/pricing", attributes={"ref": "ad"}),
    _person(
        "event",
        {"id": "sdk-5"},
        name="signed_up",
        timestamp=1600000000,
        attributes={"via": "import"},
    ),
    _person("delete", {"id": "sdk-6"}),
    _person(
        "add_device",
        {"id": "sdk/7"},
        device={"token": "tok-7", "platform": "ios", "last_used": 1700000000},
    ),
    _person("delete_device", {"id": "sdk/8"}, device={"token": "tok-8"}),
    _person("suppress", {"cio_id": "abc9"}),
    _person("unsuppress", {"email": "sdk10@example.com"}),
    {
        "type": "person",
        "action": "merge",
        "primary": {"id": "sdk-11"},
        "secondary": {"email": "old11@example.com"},
    },
    _person("identify", {"id": "sdk-12"}, attributes={"via": "batch"}),
    {
        "type": "object",
        "action": "delete",
        "identifiers": {"object_type_id": "1", "object_id": "acme"},
    },
]
EXPECTED_V1 = {
    "method": "POST",
    "path": "/api/v1/events",
    "query": {},
    "body": {"name": "invited", "data": {"recipient": "r@example.com"}},
}


def _canonical(op: dict[str, Any]) -> bytes:
    return orjson.dumps(op, option=orjson.OPT_SORT_KEYS)


def test_every_sdk_method_arrives_at_the_sandbox(
    tls_stack: tuple[Stack, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each public Track method of the official SDK, over TLS, reaches the sandbox as the
    exact v2 operation (or, for an invite event, the same v1 call) Customer.io documents."""
    stack, ca_path = tls_stack
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_path)  # how a user trusts a private CA
    cio = CustomerIO(SITE_ID, INGEST_KEY, host="127.0.0.1", port=stack.api_port, retries=0)
    started_s = time.time()
    _calls(cio)
    finished_s = time.time()
    want = len(EXPECTED_V2) + 1
    records = wait_until(
        lambda: stack.received_at_least(want),
        timeout_s=90,
        what=f"the SDK's {want} operations",
    )
    assert {r["site_id"] for r in records} == {SITE_ID}
    v1 = [r["op"] for r in records if r["kind"] == "v1"]
    assert v1 == [EXPECTED_V1]
    v2 = [r["op"] for r in records if r["kind"] == "v2"]
    for op in v2:
        if op["action"] in ("event", "page") and op["identifiers"] != {"id": "sdk-2"}:
            assert len(op.pop("id")) == 26  # cioq gave the event a ULID for Customer.io's dedup
        own_time = op.get("timestamp") in (1700000000, 1600000000)
        if op["type"] == "person" and op["action"] in TIMED_ACTIONS and not own_time:
            # cioq stamped its accept time, since the SDK sent none
            assert started_s - 1 <= op.pop("timestamp") <= finished_s + 1
    assert sorted(map(_canonical, v2)) == sorted(map(_canonical, EXPECTED_V2))
