"""Reading Redis streams in tests, typed: redis-py types every reply as a loose union."""

from __future__ import annotations

from typing import cast

import redis

Fields = dict[bytes, bytes]


def stream_fields(client: redis.Redis, key: str) -> list[Fields]:
    """Every entry's fields of stream `key`, oldest first (the client returns bytes)."""
    rows = cast(list[tuple[bytes, Fields]], client.xrange(key))
    return [fields for _, fields in rows]
