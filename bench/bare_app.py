"""The ingest baseline: a bare ASGI app that only parses the JSON body and XADDs it.

No routing, auth, validation, translation or triggers: the least any ingest API must do
to store an event durably, served by the same uvicorn settings as ``cioq api``. A single
event is one plain XADD; a v2 batch body is split into one entry per op, stored in one
MULTI (all or nothing), as cioq stores them.

``python -m bench.bare_app --port P --redis-url URL [--no-store]``
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
import redis.asyncio as aioredis
import uvicorn

OK_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"2")]


class BareApp:
    def __init__(self, redis_url: str, *, store: bool = True) -> None:
        self.redis = aioredis.Redis.from_url(redis_url)
        #: False (``--no-store``): everything but the XADD, the floor of bench/ingest_floor.py.
        self.store = store

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        if scope["method"] == "GET":  # health check while starting
            await self._ok(send)
            return
        doc = orjson.loads(b"".join(chunks))
        batch = doc.get("batch") if isinstance(doc, dict) else None
        ops = batch if isinstance(batch, list) else [doc]
        if not self.store:
            for op in ops:
                orjson.dumps(op)
        elif len(ops) == 1:
            await self.redis.xadd("bare:q", {b"o": orjson.dumps(ops[0])})
        else:  # a batch is stored whole or not at all
            pipe = self.redis.pipeline(transaction=True)
            for op in ops:
                pipe.xadd("bare:q", {b"o": orjson.dumps(op)})
            await pipe.execute()
        await self._ok(send)

    @staticmethod
    async def _ok(send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": OK_HEADERS})
        await send({"type": "http.response.body", "body": b"{}"})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--no-store", action="store_true", help="parse and answer only")
    args = parser.parse_args()
    uvicorn.run(
        BareApp(args.redis_url, store=not args.no_store),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
