"""The store's asyncio connections pack with hiredis: the bytes must be redis-py's own."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from service.store.connections import packs_with_hiredis

PYTHON = Connection()
HIREDIS = packs_with_hiredis(Connection)()


@pytest.mark.parametrize(
    "args",
    [
        ("PING",),
        ("SCRIPT LOAD", "return 1"),
        (b"CONFIG GET", b"maxmemory"),
        ("EVALSHA", "ab" * 20, 2, "k1", "k2", 1, 2, 7, 1000, 60000, "0", "", 1, "o", b"x" * 300),
        ("SET", "é ∑ 😀", -1, 0, 2**63, 1.5, 0.1, 1e20, -2.5e-7),
        ("SET", memoryview(b"view"), bytearray(b"array")),
        ("XADD", "s", "*", b"o", b"\x00\xff\r\n"),
    ],
    ids=["one", "two-word-str", "two-word-bytes", "group-commit", "numbers", "buffers", "binary"],
)
def test_the_same_bytes_as_redis_py(args: tuple[Any, ...]) -> None:
    assert b"".join(HIREDIS.pack_command(*args)) == b"".join(PYTHON.pack_command(*args))


@pytest.mark.parametrize("bad", [True, None, object()])
def test_what_redis_py_refuses_is_refused_the_same_way(bad: Any) -> None:
    with pytest.raises(DataError):
        PYTHON.pack_command("SET", "k", bad)
    with pytest.raises(DataError):
        HIREDIS.pack_command("SET", "k", bad)
