"""Customer.io's published OpenAPI documents as a test oracle, run against cioq over HTTP.

The documents (../shared/reference/customerio-openapi/, or CIOQ_CUSTOMERIO_OPENAPI_DIR)
are loaded with the corrections docs/validation-rules.md lists under "Where the document
is wrong": each is a ``oneOf`` whose branches overlap, which no value can satisfy.
"""

from __future__ import annotations

import base64
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis.generation.modes import GenerationMode

DOCS_DIR = Path(
    os.environ.get(
        "CIOQ_CUSTOMERIO_OPENAPI_DIR",
        Path(__file__).resolve().parents[3] / "shared" / "reference" / "customerio-openapi",
    )
)
DOCUMENTS = {
    "track": "customer-io-track-api-openapi.json",
    "pipelines": "customer-io-pipelines-api-openapi.json",
}
#: Where cioq serves each document's paths.
PREFIXES = {"track": "", "pipelines": "/v1"}


def available() -> bool:
    return all((DOCS_DIR / name).is_file() for name in DOCUMENTS.values())


def _any_of(schema: dict[str, Any]) -> None:
    schema["anyOf"] = schema.pop("oneOf")


def _string_choices(node: Any) -> None:
    if isinstance(node, dict):
        branches = node.get("oneOf")
        if isinstance(branches, list) and all(
            isinstance(b, dict) and b.get("type") == "string" for b in branches
        ):
            _any_of(node)
        for value in node.values():
            _string_choices(value)
    elif isinstance(node, list):
        for value in node:
            _string_choices(value)


def load(which: str) -> dict[str, Any]:
    """The document, corrected where a ``oneOf`` has overlapping branches."""
    doc: dict[str, Any] = orjson.loads((DOCS_DIR / DOCUMENTS[which]).read_bytes())
    components = doc.get("components", {})
    if which == "track":
        # A person's path identifier: id, email and cio_id are all plain strings, so
        # every value matches at least two (the component and its inline copies).
        _string_choices(doc)
        # The metric body's channels (Email, In-app, Push, ...) share metrics like
        # "opened", and none requires a channel marker: most bodies match several.
        metrics = doc["paths"]["/api/v1/metrics"]["post"]["requestBody"]
        _any_of(metrics["content"]["application/json"]["schema"])
    else:
        # "Known User" and "Anonymous User" require neither id: every body matches both.
        _any_of(components["schemas"]["group"])
    return doc


@dataclass
class Tally:
    """What cioq answered, per operation."""

    calls: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)
    #: (operation, status, body, answer) of every non-2xx answer.
    refused: list[tuple[str, int, Any, Any]] = field(default_factory=list)


def run(
    which: str,
    base_url: str,
    key: str,
    *,
    mode: GenerationMode,
    examples: int,
    seed_value: int,
) -> Tally:
    """Send ``examples`` generated cases of every operation of a Customer.io document."""
    return run_document(
        load(which),
        base_url + PREFIXES[which],
        "Basic " + base64.b64encode(f"site:{key}".encode()).decode(),
        mode=mode,
        examples=examples,
        seed_value=seed_value,
    )


#: Headers the HTTP client sets from the request itself.
_FRAMING = frozenset({"content-length", "transfer-encoding", "host", "connection"})


def run_document(
    document: dict[str, Any],
    prefix: str,
    auth: str,
    *,
    mode: GenerationMode,
    examples: int,
    seed_value: int,
    on_answer: Callable[[str, Any, httpx.Response], None] | None = None,
) -> Tally:
    """Send ``examples`` generated cases of every operation of `document` to ``prefix``."""
    schema = schemathesis.openapi.from_dict(document)
    tally = Tally()
    with httpx.Client(timeout=30) as http:
        for result in schema.get_all_operations():
            operation = result.ok()  # type: ignore[union-attr]

            @seed(seed_value)
            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def send(case: Any) -> None:
                label = case.operation.label
                kwargs = case.as_transport_kwargs(base_url=prefix)
                # The framing headers are the HTTP client's to write: a generated
                # Content-Length of "=axl 5B]" cannot leave httpx (nor any client).
                headers = {
                    k: v
                    for k, v in (kwargs.get("headers") or {}).items()
                    if k.lower() not in _FRAMING
                }
                headers["Authorization"] = auth
                request = {
                    k: v for k, v in kwargs.items() if k in ("method", "url", "params", "json")
                }
                if "content" in kwargs or "data" in kwargs:
                    request["content"] = kwargs.get("content", kwargs.get("data"))
                answer = http.request(headers=headers, **request)
                tally.calls[label] += 1
                body = kwargs.get("json")
                if answer.is_success:
                    tally.accepted[label] += 1
                else:
                    tally.refused.append((label, answer.status_code, body, _json(answer)))
                if on_answer is not None:
                    on_answer(label, body, answer)

            send()
    return tally


def _json(answer: httpx.Response) -> Any:
    try:
        return answer.json()
    except ValueError:
        return answer.text
