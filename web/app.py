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
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from ledger.migrate import make_engine
from web import account_pages, auth, jobs_pages
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


class BodyLimit:
    """Refuse a request whose declared body is too large before reading it (413)."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.limit):
                response = PlainTextResponse(f"the request is larger than {self.limit // 2**20} MB", 413)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


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
    engine = engine or make_engine(settings.db_url)
    secret = web_secret(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        log.info("portal listening", url=settings.web_url)
        yield
        await app.state.market.close()

    app = Starlette(
        routes=[*auth.routes(), *jobs_pages.routes(), *account_pages.routes(),
                Mount("/static", StaticFiles(directory=HERE / "static"), name="static")],
        middleware=[Middleware(BodyLimit),
                    Middleware(SessionMiddleware, secret_key=secret, session_cookie="market_session",
                               max_age=SESSION_SECONDS, same_site="lax", https_only=settings.web_https)],
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
