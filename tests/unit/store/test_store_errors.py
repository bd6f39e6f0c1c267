"""The store's one error boundary: redis-py trouble is StoreUnavailable, our bugs stay bugs."""

from __future__ import annotations

import asyncio

import pytest
import redis
from redis.asyncio.connection import Connection

from service.errors import StoreUnavailable
from service.store.connections import store_errors


def test_redis_errors_become_store_unavailable_naming_the_context() -> None:
    with pytest.raises(StoreUnavailable, match=r"^enqueue: down$"), store_errors("enqueue"):
        raise redis.ConnectionError("down")


def test_a_watch_conflict_passes_through_for_the_caller_to_retry() -> None:
    with pytest.raises(redis.WatchError), store_errors():
        raise redis.WatchError("changed")


def test_a_connection_torn_down_inside_redis_py_is_store_trouble() -> None:
    """Seen in a primary's failover: a 500 until this was mapped to a 503."""
    torn_down = Connection()  # never connected: no writer, like one a failure closed
    # redis-py words this differently from release to release; the type is the contract.
    with pytest.raises(StoreUnavailable), store_errors():
        asyncio.run(torn_down._send_packed_command([b"PING"]))


def test_an_attribute_error_of_our_own_is_not_hidden() -> None:
    with pytest.raises(AttributeError), store_errors():
        getattr(object(), "missing")  # noqa: B009
