"""cioq's ingest served through Starlette: the framework cioq's api does not use, measured.

The same Track lane handlers, key check, start-up gate, backpressure, body cap, metrics and
Redis writes as ``cioq api`` (the collaborators are taken from a real `IngestApp`); only the
HTTP layer differs: Starlette's router, `Request` and `Response`, with the raw-path routing
middleware the sandbox uses (`sandbox.app.RawPathRouting`), so ``a%2Fb`` stays one
segment. Served by the same uvicorn settings as ``cioq api``, so `bench/framework.py`
measures what Starlette would cost. The checks and the error table (`JSON_ERRORS`) mirror
`IngestApp` on purpose.

``python -m bench.starlette_app --port P`` (settings from the ``CIOQ_*`` environment)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from urllib.parse import unquote

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response as StarletteResponse
from starlette.routing import Route as StarletteRoute

from sandbox.app import RawPathRouting
from service.api.app import INGEST_KEY_REQUIRED, IngestApp, create_app
from service.config import load_settings
from service.errors import InvalidRequest
from service.lanes.registry import ingest_routes
from service.metrics import definitions as metrics
from service.web.errors import JSON_ERRORS
from service.web.http import BodyRefused, Request, Response, Route, base_url_of, split_path


def _to_starlette(response: Response) -> StarletteResponse:
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in response.headers}
    return StarletteResponse(response.body, response.status, headers, media_type="application/json")


def _endpoint(
    core: IngestApp, route: Route
) -> Callable[[StarletteRequest], Awaitable[StarletteResponse]]:
    """One Starlette endpoint doing what `IngestApp._dispatch` does for an ingest route."""
    settings = core.settings

    async def endpoint(request: StarletteRequest) -> StarletteResponse:
        started_s = time.perf_counter()
        try:
            response = await handle(request)
        except Exception as exc:
            response = JSON_ERRORS.response(request.scope, exc)
        metrics.observe_ingest(route.name, response.status, time.perf_counter() - started_s)
        return _to_starlette(response)

    async def handle(request: StarletteRequest) -> Response:
        workspace = core.auth.workspace(request.headers.get("authorization"))
        if workspace is None:
            raise InvalidRequest([INGEST_KEY_REQUIRED], status=401)
        await core.gate.ensure()
        await core.backpressure.check(workspace.name)
        body = await request.body()
        if len(body) > settings.listener.max_request_bytes:
            raise BodyRefused.too_large(settings.listener.max_request_bytes)
        scope = request.scope
        cioq_request = Request(
            request.method,
            split_path(scope.get("raw_path") or scope["path"].encode()),
            scope.get("query_string", b"").decode("latin-1"),
            dict(scope["headers"]),
            body,
            [unquote(str(value)) for value in request.path_params.values()],
            route.name,
            base_url_of(scope),
        )
        return await route.handler(cioq_request, workspace)

    return endpoint


def _path(route: Route) -> str:
    return "/" + "/".join(route.pattern)


def create_starlette_app(core: IngestApp) -> Starlette:
    """Starlette routes for every ingest route of `core`, plus the health check."""

    async def healthz(request: StarletteRequest) -> StarletteResponse:
        return _to_starlette(await core.healthz(Request("GET", [], "", {}, b""), None))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await core.gate.startup()
        yield
        await core.aclose()

    routes = [
        StarletteRoute(_path(r), _endpoint(core, r), methods=[r.method])
        for r in ingest_routes(core.queue, core.settings)
    ]
    routes.append(StarletteRoute("/healthz", healthz, methods=["GET"]))
    return Starlette(routes=routes, middleware=[Middleware(RawPathRouting)], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # The same uvicorn settings as `cioq api` (cioq/cli.py).
    uvicorn.run(
        create_starlette_app(create_app(load_settings())),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
