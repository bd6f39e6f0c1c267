"""Reading Redis streams in tests, typed: redis-py types every reply as a loose union."""

from __future__ import annotations

from typing import cast

from service.store.connections import SyncStore

Fields = dict[bytes, bytes]
Entry = tuple[bytes, Fields]


def stream_entries(client: SyncStore, key: str, *, newest_first: bool = False) -> list[Entry]:
    """Every entry (id, fields) of stream `key`, oldest first (the client returns bytes)."""
    rows = client.xrevrange(key) if newest_first else client.xrange(key)
    return cast(list[Entry], rows)


def stream_fields(client: SyncStore, key: str) -> list[Fields]:
    """Every entry's fields of stream `key`, oldest first."""
    return [fields for _, fields in stream_entries(client, key)]
