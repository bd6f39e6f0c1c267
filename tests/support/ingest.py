"""Helpers for tests that post to the ingest API and read what it queued."""

from __future__ import annotations

from typing import Any

import orjson
import redis

from service import keys
from service.jobs import Lane
from tests.support.streams import stream_fields

#: Basic auth with the default development ingest key (any site id is accepted with it).
AUTH = ("any-site", "dev-ingest-key")


def queued(client: redis.Redis, shards: int = 4) -> list[dict[str, Any]]:
    """Every op queued in workspace ``default``, shard by shard."""
    return [
        orjson.loads(fields[b"o"])
        for shard in range(shards)
        for fields in stream_fields(client, keys.shard_keys("default", shard, Lane.TRACK).stream)
    ]
