"""A `service.store.wire.Wire` to a Redis URL, for the tests of the write path's connection."""

from __future__ import annotations

import redis.asyncio as aioredis

from service.store.wire import Address, Wire


def wire_for(
    url: str, *, timeout_s: float = 2.0, outage_wait_s: float = 0.0, fail_fast: bool = False
) -> Wire:
    """A wire to `url` with `timeout_s` as its read timeout, made as `SlotWriter` makes one
    (the address read from a redis-py client of that URL)."""
    address = Address.of(aioredis.Redis.from_url(url, socket_timeout=timeout_s))
    return Wire(address, outage_wait_s=outage_wait_s, fail_fast=fail_fast)
