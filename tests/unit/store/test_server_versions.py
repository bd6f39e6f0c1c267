"""Which servers are asked for WAITAOF: the version read from ``INFO``, Redis and Valkey.

Valkey 9 reports ``redis_version:7.2.4`` beside ``valkey_version:9.1.2`` (seen on the
valkey-server of tests/locks/valkey.lock); cioq reads Valkey's own version.
"""

from __future__ import annotations

from typing import Any

import pytest

from service.config import Settings
from service.errors import ConfigError
from service.store.startup_checks import evaluate, facts_from

AOF = {"aof_enabled": 1, "maxmemory_policy": "noeviction"}
VALKEY_9 = {"redis_version": "7.2.4", "server_name": "valkey", "valkey_version": "9.1.2"}


@pytest.mark.parametrize(
    ("server", "appendfsync", "version", "waitaof"),
    [
        ({"redis_version": "7.0.15"}, "always", (7, 0, 15), False),
        ({"redis_version": "7.0.15"}, "everysec", (7, 0, 15), None),
        ({"redis_version": "7.2.0"}, "everysec", (7, 2, 0), True),
        ({"redis_version": "8.2.1"}, "everysec", (8, 2, 1), True),
        (VALKEY_9, "everysec", (9, 1, 2), True),
        (VALKEY_9, "always", (9, 1, 2), True),
        # A Valkey that reported an older Redis for compatibility is still a Valkey.
        ({"redis_version": "7.0.0", "valkey_version": "8.0.1"}, "everysec", (8, 0, 1), True),
        ({"valkey_version": "9.1.2"}, "no", (9, 1, 2), True),
        ({}, "always", (0,), False),
    ],
)
def test_the_durability_level_fsync_asks_for_waitaof_where_the_server_has_it(
    server: dict[str, Any], appendfsync: str, version: tuple[int, ...], waitaof: bool | None
) -> None:
    """None: refused (no WAITAOF, and not every write fsynced before its reply)."""
    found = facts_from({**AOF, **server}, {"appendfsync": appendfsync})
    assert found.version == version
    settings = Settings(durability="fsync")
    if waitaof is None:
        with pytest.raises(ConfigError):
            evaluate(found, settings.redis)
        return
    confirmation = evaluate(found, settings.redis).confirmation
    assert confirmation is not None and confirmation.waitaof is waitaof
