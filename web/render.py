"""What every page shares: templates, the member of a session, CSRF tokens, flash messages."""
from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.templating import Jinja2Templates

from cli.money import format_credits
from web.feed import feed_url


def credits(micro: int | None) -> str:
    return "-" if micro is None else format_credits(micro)


def seconds(ms: int | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.3f}"


def when(text: str | None) -> str:
    """Ledger time to the second, as people read it (``2026-11-22 10:00:00``)."""
    return "-" if not text else text[:19].replace("T", " ")


TEMPLATES = Jinja2Templates(directory=str(Path(__file__).resolve().parent / "templates"))
TEMPLATES.env.filters.update(credits=credits, seconds=seconds, when=when)


class LoginRequired(HTTPException):
    """No member logged in: the handler sends the browser to the log-in page."""

    def __init__(self, path: str):
        super().__init__(303, "log in first", headers={"Location": f"/login?next={quote(path)}"})


def csrf_token(request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


async def checked_form(request, **limits):
    """The posted form, once its CSRF token matches the session's (else 403)."""
    form = await request.form(**limits)
    sent, expected = form.get("csrf", ""), request.session.get("csrf", "")
    if not expected or not isinstance(sent, str) or not secrets.compare_digest(sent, expected):
        raise HTTPException(403, "this form has expired or did not come from this site: reload the page and try again")
    return form


async def member_of(request) -> str | None:
    """The logged-in account, or None. A password change ends every older session."""
    account, session_id = request.session.get("account"), request.session.get("session_id")
    if not account or not session_id:
        return None
    members = request.app.state.members
    # a session ends on the server: log-out deletes it, a password change every other one
    if await run_in_threadpool(members.session_account, session_id) != account:
        request.session.clear()
        return None
    changed = await run_in_threadpool(members.password_changed_at, account)
    if changed is None or changed != request.session.get("password_changed_at"):
        request.session.clear()
        return None
    return account


async def require_member(request) -> str:
    account = await member_of(request)
    if account is None:
        raise LoginRequired(request.url.path)
    return account


def flash(request, message: str, kind: str = "ok") -> None:
    request.session.setdefault("flash", []).append([kind, message])


def render(request, name: str, context: dict | None = None, status: int = 200, headers=None):
    context = dict(context or {})
    context.setdefault("member", request.session.get("account"))
    if context["member"]:
        context["feed_url"] = feed_url(request, context["member"])
    context["csrf"] = csrf_token(request)
    context["flashes"] = request.session.pop("flash", [])
    return TEMPLATES.TemplateResponse(request, name, context, status_code=status, headers=headers)
