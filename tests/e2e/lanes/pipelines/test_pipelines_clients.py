"""Customer.io's own Pipelines clients, unchanged, deliver through cioq to the sandbox.

Each client gets only cioq's address and an ingest key (as its write key); the test then
reads what the sandbox Customer.io received and checks every call, field by field, by
the messageId the test gave it: all arrive, exactly once, in the order sent per person.

* ``customerio-cdp-analytics`` (Python; its own background batching to ``/v1/batch``),
  without and with gzip bodies, pip-installed pinned into .data/py by the test;
* ``@customerio/cdp-analytics-node`` (batching) and ``customerio-node``'s
  ``PipelinesClient`` (one request per call, strict mode), run by node; the npm packages
  are installed pinned into .data/node by the test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.installs import npm_install, pip_target
from tests.support.processes import wait_until
from tests.support.stack import CDP_KEY, INGEST_KEY, Stack

#: Fields each call carries, as sent on the wire; compared exactly on arrival.
COMPARED = ("type", "userId", "anonymousId", "event", "name", "properties", "traits", "groupId")


def calls(tag: str) -> list[dict[str, Any]]:
    """One of each call type, two people, a semantic event; ids unique to `tag`."""
    a, b, anon = f"{tag}-ann", f"{tag}-bob", f"{tag}-anon"

    def mid() -> str:
        return f"{tag}-{uuid.uuid4()}"

    plain: list[dict[str, Any]] = [
        {"type": "identify", "userId": a, "traits": {"email": "a@x.io", "plan": "pro"}},
        {"type": "track", "userId": a, "event": "Signed Up", "properties": {"n": 1}},
        {"type": "page", "userId": a, "name": "Home", "properties": {"url": "https://x/"}},
        {"type": "screen", "anonymousId": anon, "name": "Settings", "properties": {"k": "v"}},
        {"type": "group", "userId": a, "groupId": "acme", "traits": {"object_type_id": "1"}},
        {
            "type": "track",
            "userId": b,
            "event": "Device Created or Updated",
            "properties": {},
            "context": {"device": {"token": "tok-1", "type": "ios"}},
        },
        {"type": "track", "userId": a, "event": "Upgraded", "properties": {"to": "max"}},
        {"type": "alias", "userId": b, "previousId": f"{tag}-old"},
    ]
    return [{**call, "messageId": mid()} for call in plain]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("clients"))
    try:
        stack.start_api()
        stack.start_worker(concurrency=1, pool="solo")
        yield stack
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.close()


def arrived(stack: Stack, sent: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls of `sent` the sandbox recorded (as the Pipelines write key), in arrival order."""
    ids = {call["messageId"] for call in sent}
    got: list[dict[str, Any]] = []

    def all_there() -> bool:
        got[:] = [
            r["op"]
            for r in stack.received()
            if r["kind"] == "cdp" and r["site_id"] == CDP_KEY and r["op"].get("messageId") in ids
        ]
        return len(got) >= len(sent)

    wait_until(all_there, timeout_s=60, what=f"{len(sent)} calls at the sandbox")
    return got


def check_exact(sent: list[dict[str, Any]], got: list[dict[str, Any]]) -> None:
    """Every call once, each field as sent, one person's calls in the order sent."""
    assert sorted(c["messageId"] for c in got) == sorted(c["messageId"] for c in sent)
    by_id = {c["messageId"]: c for c in got}
    for call in sent:
        received = by_id[call["messageId"]]
        for name in COMPARED:
            assert received.get(name) == call.get(name), (name, call, received)
        if "previousId" in call:
            assert received["previousId"] == call["previousId"]
        if "context" in call:
            assert received["context"]["device"] == call["context"]["device"]
        assert received["timestamp"]  # the client's own stamp, kept
    for person in {c.get("userId") or c.get("anonymousId") for c in sent}:
        order = [c["messageId"] for c in sent if person in (c.get("userId"), c.get("anonymousId"))]
        seen = [c["messageId"] for c in got if person in (c.get("userId"), c.get("anonymousId"))]
        assert seen == order


#: Runs customerio-cdp-analytics in its own process: its ``customerio`` package would
#: replace the Track SDK's in this one (tests/support/installs.py).
PY_SCRIPT = """
import json, sys
from customerio.analytics.client import Client
api_url, write_key, gzip, calls_json = sys.argv[1:]
errors = []
client = Client(write_key=write_key, host=api_url, gzip=gzip == "gzip", upload_interval=0.05,
                on_error=lambda exc, batch: errors.append(repr(exc)))
send = {
    "identify": lambda x: client.identify(x["userId"], x["traits"], message_id=x["messageId"]),
    "track": lambda x: client.track(x["userId"], x["event"], x.get("properties"),
                                    context=x.get("context"), message_id=x["messageId"]),
    "page": lambda x: client.page(x["userId"], name=x["name"], properties=x["properties"],
                                  message_id=x["messageId"]),
    "screen": lambda x: client.screen(name=x["name"], properties=x["properties"],
                                      anonymous_id=x["anonymousId"], message_id=x["messageId"]),
    "group": lambda x: client.group(x["userId"], x["groupId"], x["traits"],
                                    message_id=x["messageId"]),
    "alias": lambda x: client.alias(x["previousId"], x["userId"], message_id=x["messageId"]),
}
for call in json.loads(calls_json):
    send[call["type"]](call)
client.flush()
client.shutdown()
sys.exit("errors: " + "; ".join(errors) if errors else 0)
"""


@pytest.mark.parametrize("gzip", ["plain", "gzip"])
def test_python_cdp_analytics(stack: Stack, gzip: str, tmp_path: Path) -> None:
    """customerio-cdp-analytics batches in its own thread; cioq re-packs and forwards."""
    folder = pip_target("cdp-analytics")
    script = tmp_path / "send.py"
    script.write_text(PY_SCRIPT)
    sent = calls(f"py-{gzip}")
    result = subprocess.run(
        [sys.executable, str(script), stack.api_url, INGEST_KEY, gzip, json.dumps(sent)],
        env={**os.environ, "PYTHONPATH": str(folder)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    got = arrived(stack, sent)
    check_exact(sent, got)
    assert all(c["context"]["library"]["name"] == "analytics-python" for c in got)


NODE_SCRIPT = """
const { Analytics } = require('@customerio/cdp-analytics-node');
const { PipelinesClient } = require('customerio-node');
const [apiUrl, writeKey, which, callsJson] = process.argv.slice(2);
const calls = JSON.parse(callsJson);
function strip(call) { const { type, ...rest } = call; return rest; }
async function main() {
  if (which === 'cdp-analytics-node') {
    const analytics = new Analytics({ writeKey, host: apiUrl, flushInterval: 100 });
    const failed = [];
    analytics.on('error', (err) => failed.push(String(err && err.reason || err)));
    for (const call of calls) analytics[call.type](strip(call));
    await analytics.closeAndFlush({ timeout: 20000 });
    if (failed.length) throw new Error('failed: ' + failed.join('; '));
  } else {
    const cdp = new PipelinesClient(writeKey, { url: apiUrl + '/v1', strictMode: true });
    const half = Math.floor(calls.length / 2);
    for (const call of calls.slice(0, half)) await cdp[call.type](strip(call));
    await cdp.batch(calls.slice(half));
  }
}
main().then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });
"""


@pytest.mark.parametrize("which", ["cdp-analytics-node", "customerio-node"])
def test_node_clients(stack: Stack, which: str, tmp_path: Path) -> None:
    """@customerio/cdp-analytics-node and customerio-node's PipelinesClient (calls + batch)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    modules = npm_install()
    script = tmp_path / "send.js"
    script.write_text(NODE_SCRIPT)
    sent = calls(which)
    result = subprocess.run(
        [node, str(script), stack.api_url, INGEST_KEY, which, json.dumps(sent)],
        env={"NODE_PATH": str(modules), "PATH": str(Path(node).parent)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    check_exact(sent, arrived(stack, sent))
