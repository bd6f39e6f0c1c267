"""The router's index by path length and first segment answers as a scan of every route."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from service.api.app import create_app
from service.config import Settings
from service.web.http import Route, Router


async def _handler(*_: Any) -> Any:
    return None


def _scan(routes: list[Route], method: str, segments: list[str]) -> tuple[Any, list[str], bool]:
    """What the router answered before it had an index: the first route in table order."""
    router = Router([])
    router.routes = routes
    router._candidates = {}
    router._by_length = {n: [r for r in routes if len(r.pattern) == n] for n in range(12)}
    return router.match(method, segments)


#: The ingest API's own table (nothing connects until a request comes), plus a route
#: whose first segment is a parameter, which every path of its length must be tried on.
ROUTES = [
    Route("GET", ("{param}", "x"), "param-first", _handler),
    *create_app(Settings()).router.routes,
]
SEGMENTS = [*sorted({s for r in ROUTES for s in r.pattern if not s.startswith("{")}), "p1", ""]


@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    segments=st.lists(st.sampled_from(SEGMENTS), max_size=7),
)
def test_the_index_answers_as_a_scan_of_every_route(method: str, segments: list[str]) -> None:
    assert Router(ROUTES).match(method, segments) == _scan(ROUTES, method, segments)


def test_every_route_is_found_by_its_own_path() -> None:
    router = Router(ROUTES)
    for route in ROUTES:
        path = [s if not s.startswith("{") else "v" for s in route.pattern]
        found, _, exists = router.match(route.method, path)
        assert exists
        assert found is not None
        assert found.method == route.method
