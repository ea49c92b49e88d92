"""The portal: an ASGI app (Starlette + Jinja2) over the market.

``create_app(settings)`` wires the pieces: the member store, the mailer, the
market client (requests over the broker, questions from the projections),
signed session cookies, CSRF checks, and the pages of ``web.auth``,
``web.jobs_pages`` and ``web.account_pages``.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from ledger.migrate import make_engine
from web import account_pages, auth, health, jobs_pages
from web.mail import Mailer
from web.market import Market
from web.members import LoginLimiter, Members
from web.render import LoginRequired, render

HERE = Path(__file__).resolve().parent
#: largest request body the portal reads (a job upload and its form fields)
MAX_BODY_BYTES = 5 * 1024 * 1024
#: how long a session lasts without logging in again
SESSION_SECONDS = 14 * 24 * 3600
log = structlog.get_logger("portal")


def web_secret(settings) -> str:
    """MARKET_WEB_SECRET, else a random key kept (mode 0600) in MARKET_HOME/web-secret."""
    if settings.web_secret:
        return settings.web_secret
    path = Path(settings.home) / "web-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


class WatchedSend:
    """An ASGI ``send`` that remembers whether the response has started (after
    that, a middleware can no longer answer in its place)."""

    def __init__(self, send):
        self.send, self.started = send, False

    async def __call__(self, message) -> None:
        self.started = self.started or message["type"] == "http.response.start"
        await self.send(message)


class BodyLimit:
    """Refuse a request body over the limit (413): a declared one before reading it, and any body
    (chunked, or longer than it declared) as soon as what was read passes the limit."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._refuse(scope, receive, send)
            return
        read = 0

        async def bounded_receive():
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > self.limit:
                    raise BodyTooLarge(413, self._reason())
            return message

        watched = WatchedSend(send)
        try:
            await self.app(scope, bounded_receive, watched)
        except BodyTooLarge:
            if watched.started:
                raise
            await self._refuse(scope, receive, send)

    def _reason(self) -> str:
        return f"the request is larger than {self.limit // 2**20} MB"

    async def _refuse(self, scope, receive, send) -> None:
        response = PlainTextResponse(self._reason(), 413, headers={"Connection": "close"})
        await response(scope, receive, send)


class ServerErrors:
    """A page that raises gets the portal's 500 page here, inside the session middleware.
    Starlette's own last-resort handler sends that page and then raises again, and
    uvicorn then closes the member's connection, which can reach her as a reset
    with the page lost (seen on a PostgreSQL restart)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watched = WatchedSend(send)
        try:
            await self.app(scope, receive, watched)
        except Exception as error:
            if watched.started:
                raise
            response = await _server_error(Request(scope, receive), error)
            await response(scope, receive, send)


class BodyTooLarge(HTTPException):
    """Raised while reading a body that passed the limit: the page says 413 and nothing more is read."""


async def _login_first(request, error: LoginRequired):
    return RedirectResponse(error.headers["Location"], 303)


async def _server_error(request, error: Exception):
    log.error("request failed", path=request.url.path, exc_info=error)
    return render(request, "error.html", {"status": 500, "message": "the portal failed to answer this request; "
                                          "the error is in its log. Try again in a moment."},
                  status=500)


async def _http_error(request, error: HTTPException):
    return render(request, "error.html", {"status": error.status_code, "message": error.detail},
                  status=error.status_code, headers=getattr(error, "headers", None))


def create_app(settings, *, engine=None, login_limiter: LoginLimiter | None = None) -> Starlette:
    # pre-ping: a pooled connection PostgreSQL dropped (a restart) is replaced before a
    # request uses it, not found out by a member's page; one round trip per checkout
    engine = engine or make_engine(settings.db_url, pool_pre_ping=True)
    secret = web_secret(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        log.info("portal listening", url=settings.web_url)
        yield
        await app.state.market.close()

    app = Starlette(
        routes=[*auth.routes(), *health.routes(), *jobs_pages.routes(), *account_pages.routes(),
                Mount("/static", StaticFiles(directory=HERE / "static"), name="static")],
        middleware=[Middleware(BodyLimit),
                    Middleware(SessionMiddleware, secret_key=secret, session_cookie="market_session",
                               max_age=SESSION_SECONDS, same_site="lax", https_only=settings.web_https),
                    Middleware(ServerErrors)],
        exception_handlers={LoginRequired: _login_first, HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.members = Members(engine)
    app.state.mailer = Mailer(settings)
    app.state.market = Market(settings, engine)
    app.state.limiter_by_account = login_limiter or LoginLimiter(attempts=5, window=300)
    app.state.limiter_by_address = LoginLimiter(attempts=30, window=300)
    app.state.feed_key = secret.encode("utf-8")
    return app
