"""``Idempotency-Key``: a repeat within the window gets the first answer and queues nothing.

The first answer is written in the same Redis transaction as the request's jobs (see
`Queue.enqueue_once`), so "stored" and "remembered" cannot disagree: a repeat either
finds the answer, or the first request stored nothing and the repeat is a first try.
Only accepted requests are remembered; a refused or unstored one may be sent again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import orjson

from service import keys
from service.api.http import Response
from service.config import Settings, Workspace
from service.errors import FieldError, InvalidJob
from service.jobs import Job
from service.queue import Queue

HEADER = b"idempotency-key"
MAX_KEY_CHARS = 255
#: Visible ASCII only: the key becomes part of a Redis key and must read back unchanged.
_KEY = re.compile(r"[\x21-\x7e]+")
#: Marks an answer replayed from the first request (the header name Stripe uses).
REPLAYED = (b"idempotent-replayed", b"true")


def key_of(header: str | None) -> str | None:
    """The request's Idempotency-Key, None without one; InvalidJob when malformed."""
    if header is None:
        return None
    if len(header) > MAX_KEY_CHARS:
        raise InvalidJob(
            [
                FieldError(
                    "Idempotency-Key",
                    "max_length",
                    f"the Idempotency-Key header is over {MAX_KEY_CHARS} characters",
                    MAX_KEY_CHARS,
                    len(header),
                )
            ]
        )
    if not _KEY.fullmatch(header):
        raise InvalidJob(
            [
                FieldError(
                    "Idempotency-Key",
                    "format",
                    "the Idempotency-Key header must be 1 or more visible ASCII characters",
                )
            ]
        )
    return header


def _encode(answer: Response) -> bytes:
    return orjson.dumps({"status": answer.status, "body": answer.body.decode()})


def _decode(stored: bytes) -> Response:
    data = orjson.loads(stored)
    return Response(int(data["status"]), str(data["body"]).encode(), (REPLAYED,))


class Idempotency:
    """Stores a request's jobs once per (workspace, Idempotency-Key) within the window."""

    def __init__(self, queue: Queue, settings: Settings) -> None:
        self.queue = queue
        self.window_ms = int(settings.idempotency_window_s * 1000)

    async def store(
        self, ws: Workspace, key: str, jobs: Sequence[Job], answer: Response
    ) -> Response:
        """`answer` once the jobs are stored; the first request's answer on a repeat."""
        first = await self.queue.enqueue_once(
            ws.name,
            jobs,
            key=keys.idempotency(ws.name, key),
            answer=_encode(answer),
            window_ms=self.window_ms,
        )
        return answer if first is None else _decode(first)
