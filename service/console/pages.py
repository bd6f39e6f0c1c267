"""What every console page shares: the signed-in session, the form, rendering, redirects.

Pages are Jinja2 templates (Starlette's `Jinja2Templates` over an environment with
autoescaping on and undefined names refused), rendered with the session and its CSRF
token, so every form the page holds can post back.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import jinja2
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from service.console.session import Session, Sessions, cookie_from
from service.store.dead_letter_admin import FILTER_FIELDS
from service.web.auth import Authenticator


class Form:
    """A urlencoded form body (or a query string), field → values.

    Parsed here rather than by Starlette's `Request.form`, which needs python-multipart
    even for urlencoded bodies and reads the body without the console's size and time caps.
    """

    def __init__(self, text: str) -> None:
        self.values = parse_qs(text, keep_blank_values=True)

    def get(self, name: str, default: str = "") -> str:
        return self.values.get(name, [default])[-1].strip()

    def all(self, name: str) -> list[str]:
        return [v for v in self.values.get(name, []) if v]

    def filters(self) -> dict[str, str]:
        return {name: self.get(name) for name in FILTER_FIELDS if self.get(name)}


def query_of(request: Request) -> Form:
    return Form(request.scope.get("query_string", b"").decode("latin-1"))


def redirect(location: str, *, set_cookie: bytes | None = None) -> Response:
    response = RedirectResponse(location, status_code=303)
    if set_cookie is not None:
        response.headers.append("set-cookie", set_cookie.decode("latin-1"))
    return response


class Pages:
    """Sessions of the request and the templates pages are rendered from."""

    def __init__(self, sessions: Sessions, auth: Authenticator) -> None:
        self.sessions = sessions
        self.auth = auth
        self.templates = Jinja2Templates(
            env=jinja2.Environment(
                loader=jinja2.PackageLoader("service.console", "templates"),
                autoescape=True,
                undefined=jinja2.StrictUndefined,
            )
        )

    def session_of(self, request: Request) -> Session | None:
        session = self.sessions.read(cookie_from(request.headers.get("cookie")))
        # A key removed from CIOQ_ADMIN_KEYS ends its sessions at the next restart.
        if session is None or session.name not in self.auth.admin_names:
            return None
        return session

    def page(
        self,
        request: Request,
        status: int,
        template: str,
        session: Session | None,
        **context: Any,
    ) -> Response:
        csrf = self.sessions.csrf_token(session) if session else ""
        return self.templates.TemplateResponse(
            request, template, {"session": session, "csrf": csrf, **context}, status_code=status
        )

    def error(
        self, request: Request, status: int, title: str, *, signed_in: bool = True, **context: Any
    ) -> Response:
        """The error page; `signed_in` False leaves the session's navigation off it."""
        session = self.session_of(request) if signed_in else None
        context.setdefault("errors", [])
        return self.page(request, status, "error.html", session, title=title, **context)
