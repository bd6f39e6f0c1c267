"""The official App API clients, unchanged, pointed at cioq (real processes): each gets
Customer.io's own answer back (the sandbox's delivery ids), and each send arrives once.

* ``customerio`` (Python) ``APIClient``: every send method of 3.2;
* ``customerio-node`` ``APIClient``: sendEmail, sendPush, sendSMS and triggerBroadcast,
  run by node; the npm package is installed pinned into ``.data/node`` on first use.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from customerio import (
    APIClient,
    SendEmailRequest,
    SendInAppRequest,
    SendInboxMessageRequest,
    SendPushRequest,
    SendSMSRequest,
    SendWhatsAppRequest,
)
from customerio.client_base import CustomerIOException

from tests.support.app_load import queue_sends, settle
from tests.support.installs import npm_install
from tests.support.processes import wait_until
from tests.support.stack import APP_KEY, INGEST_KEY, Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("app-clients"), app_send_wait_ms=8000)
    try:
        stack.start_api()
        stack.start_sweeper()
        stack.start_worker(concurrency=2)
        # The clients' first send must not race the worker's start-up: on a loaded machine
        # Celery took longer than the 8 s wait to boot, and that send got cioq's 202.
        warm = queue_sends(stack, "warm-up", 1)
        assert (
            settle(stack, "warm-up", warm, timeout_s=90).outcomes[warm[0]]["state"] == "delivered"
        )
        yield stack
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.close()


def app_records(stack: Stack) -> list[dict[str, Any]]:
    return [r["op"] for r in stack.received() if r["kind"] == "app" and r["site_id"] == APP_KEY]


def check_once(stack: Stack, answers: list[dict[str, Any]], key: str) -> None:
    """Each answer is Customer.io's (the sandbox's id), and each id arrived exactly once."""
    ids = [a[key] for a in answers]
    assert all(ids) and len(set(ids)) == len(ids)
    records = wait_until(
        lambda: (got := app_records(stack)) and {r.get(key) for r in got} >= set(ids) and got,
        timeout_s=30,
        what="the sends at the sandbox",
    )
    arrived = [r[key] for r in records if r.get(key) in set(ids)]
    assert sorted(arrived) == sorted(ids)


def test_python_api_client_every_send_method(stack: Stack) -> None:
    client = APIClient(INGEST_KEY, url=stack.api_url)
    person = {"id": "py-1"}
    answers = [
        client.send_email(
            SendEmailRequest(
                transactional_message_id=1,
                to="jane@example.com",
                identifiers=person,
                message_data={"name": "Jane"},
            )
        ),
        client.send_push(
            SendPushRequest(transactional_message_id=2, identifiers=person, title="Hi")
        ),
        client.send_sms(
            SendSMSRequest(transactional_message_id=3, to="+15555550100", identifiers=person)
        ),
        client.send_whatsapp(
            SendWhatsAppRequest(transactional_message_id=4, to="+15555550100", identifiers=person)
        ),
        client.send_inbox_message(
            SendInboxMessageRequest(transactional_message_id=5, identifiers=person)
        ),
        client.send_in_app(SendInAppRequest(transactional_message_id=6, identifiers=person)),
    ]
    assert all(set(a) == {"delivery_id", "queued_at"} for a in answers), answers
    check_once(stack, answers, "delivery_id")
    kinds = {r["delivery_id"]: r["kind"] for r in app_records(stack)}
    assert [kinds[a["delivery_id"]] for a in answers] == [
        "email",
        "push",
        "sms",
        "whatsapp",
        "inbox_message",
        "in_app",
    ]


def test_python_client_gets_a_400_for_a_bad_send(stack: Stack) -> None:
    """Refused at ingest, before anything is queued, with Customer.io's status."""
    client = APIClient(INGEST_KEY, url=stack.api_url)
    bad = SendEmailRequest(transactional_message_id=1, to="a@example.com", identifiers={})
    with pytest.raises(CustomerIOException):
        client.send_email(bad)
    # The SDK words its exception itself; what cioq answered is checked on the wire.
    answer = httpx.post(
        f"{stack.api_url}/v1/send/email",
        json=bad._to_dict(),
        headers={"Authorization": f"Bearer {INGEST_KEY}"},
        timeout=30,
    )
    assert answer.status_code == 400
    assert "identifiers" in answer.text


NODE_SCRIPT = """
const { APIClient, SendEmailRequest, SendPushRequest, SendSMSRequest } = require('customerio-node');
const [apiUrl, key] = process.argv.slice(2);
async function main() {
  const api = new APIClient(key, { url: apiUrl + '/v1' });
  const who = { id: 'node-1' };
  const out = [];
  out.push(await api.sendEmail(new SendEmailRequest({
    to: 'node@example.com', identifiers: who, transactional_message_id: 11,
    message_data: { a: 1 } })));
  out.push(await api.sendPush(new SendPushRequest({
    identifiers: who, transactional_message_id: 12 })));
  out.push(await api.sendSMS(new SendSMSRequest({
    to: '+15555550111', identifiers: who, transactional_message_id: 13 })));
  out.push(await api.triggerBroadcast(21, { headline: 'Big news' }, { ids: ['node-1'] }));
  console.log(JSON.stringify(out));
}
main().then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });
"""


def test_node_api_client_sends_and_trigger(stack: Stack, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    modules = npm_install()
    script = tmp_path / "send.js"
    script.write_text(NODE_SCRIPT)
    result = subprocess.run(
        [node, str(script), stack.api_url, INGEST_KEY],
        env={"NODE_PATH": str(modules), "PATH": str(Path(node).parent)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    *sends, trigger = json.loads(result.stdout)
    assert all(set(a) == {"delivery_id", "queued_at"} for a in sends), sends
    check_once(stack, sends, "delivery_id")
    assert set(trigger) == {"id"}
    check_once(stack, [trigger], "id")
    [recorded] = [r for r in app_records(stack) if r.get("id") == trigger["id"]]
    assert recorded["broadcast_id"] == 21
    assert recorded["body"] == {"data": {"headline": "Big news"}, "ids": ["node-1"]}
