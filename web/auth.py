"""Sign up (confirmed by e-mail), log in, log out, change the password."""
from __future__ import annotations

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from broker_setup.rpc import Refused
from cli.keys import member_key
from web.members import MemberError
from web.render import checked_form, flash, member_of, render, require_member

log = structlog.get_logger("portal.auth")


def _safe_next(target: str | None) -> str:
    # only a path of this site: never an open redirect to another one
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/dashboard"
    return target


async def home(request):
    if await member_of(request):
        return RedirectResponse("/dashboard", 303)
    return render(request, "home.html")


async def signup(request):
    if request.method == "GET":
        return render(request, "signup.html", {"values": {}})
    form = await checked_form(request)
    values = {k: str(form.get(k, "")) for k in ("account", "email")}
    if form.get("password") != form.get("password_again"):
        return render(request, "signup.html", {"values": values, "error": "the two passwords differ"}, 400)
    state = request.app.state
    try:
        token = await run_in_threadpool(state.members.start_signup, values["account"], values["email"],
                                        str(form.get("password", "")))
    except MemberError as e:
        return render(request, "signup.html", {"values": values, "error": str(e)}, 400)
    link = f"{state.settings.web_url}/confirm/{token}"
    body = (f"Hello {values['account'].strip()},\n\nto open your account on the compute market, follow this link "
            f"within 24 hours:\n\n{link}\n\nIf you did not sign up, ignore this mail.\n")
    await run_in_threadpool(state.mailer.send, values["email"].strip(), "Confirm your compute market account", body)
    return render(request, "signup_sent.html", {"email": values["email"].strip()})


async def confirm(request):
    token = request.path_params["token"]
    state = request.app.state
    try:
        signup = await run_in_threadpool(state.members.pending, token)
    except MemberError as e:
        return render(request, "error.html", {"status": 404, "message": str(e)}, 404)
    if request.method == "GET":
        # a click confirms, not the GET: mail scanners fetch links on their own
        return render(request, "confirm.html", {"account": signup.account, "token": token})
    await checked_form(request)
    try:
        await state.market.request(signup.account, "account.opened",
                                   {"account": signup.account, "email": signup.email, "credit_limit": 0})
    except Refused as e:
        await run_in_threadpool(state.members.void_signup, token)
        return render(request, "error.html", {"status": 409, "message": f"the account cannot be opened: {e}"}, 409)
    await run_in_threadpool(state.members.finish_signup, token, signup)
    flash(request, f"account {signup.account} is open: log in")
    return RedirectResponse("/login", 303)


async def login(request):
    if request.method == "GET":
        return render(request, "login.html", {"next": request.query_params.get("next", "")})
    form = await checked_form(request)
    account, password = str(form.get("account", "")).strip(), str(form.get("password", ""))
    target = _safe_next(str(form.get("next", "")))
    state = request.app.state
    address = f"address:{request.client.host if request.client else '?'}"
    wait = max(state.limiter_by_account.retry_after(f"account:{account}"), state.limiter_by_address.retry_after(address))
    if wait:
        return render(request, "login.html", {"next": target, "account": account,
                                              "error": f"too many failed log-ins: try again in {wait} s"},
                      429, headers={"Retry-After": str(wait)})
    if not await run_in_threadpool(state.members.authenticate, account, password):
        state.limiter_by_account.failed(f"account:{account}")
        state.limiter_by_address.failed(address)
        return render(request, "login.html", {"next": target, "account": account,
                                              "error": "unknown account or wrong password"}, 401)
    state.limiter_by_account.succeeded(f"account:{account}")
    changed = await run_in_threadpool(state.members.password_changed_at, account)
    # a fresh session (and CSRF token) at log-in: nothing set before it carries over
    request.session.clear()
    session_id = await run_in_threadpool(state.members.open_session, account)
    request.session.update(account=account, password_changed_at=changed, session_id=session_id)
    return RedirectResponse(target, 303)


async def logout(request):
    await checked_form(request)
    if request.session.get("session_id"):
        # the server forgets the session: a copy of this cookie is dead from now on
        await run_in_threadpool(request.app.state.members.close_session, request.session["session_id"])
    request.session.clear()
    flash(request, "logged out")
    return RedirectResponse("/", 303)


async def password(request):
    account = await require_member(request)
    if request.method == "GET":
        return render(request, "password.html")
    form = await checked_form(request)
    new = str(form.get("new_password", ""))
    if new != form.get("new_password_again"):
        return render(request, "password.html", {"error": "the two new passwords differ"}, 400)
    members = request.app.state.members
    try:
        await run_in_threadpool(members.change_password, account, str(form.get("current_password", "")), new)
    except MemberError as e:
        return render(request, "password.html", {"error": str(e)}, 400)
    # this session stays valid; every other one ends (see member_of)
    request.session["password_changed_at"] = await run_in_threadpool(members.password_changed_at, account)
    await run_in_threadpool(members.close_other_sessions, account, request.session["session_id"])
    flash(request, "password changed; other sessions are logged out")
    return RedirectResponse("/dashboard", 303)


async def key(request):
    """A new broker key of the member's own, downloaded once as a credentials file (marketctl's)."""
    account = await require_member(request)
    settings = request.app.state.settings
    if request.method == "GET":
        return render(request, "key.html", {"portal_url": settings.web_url})
    form = await checked_form(request)
    state = request.app.state
    # the session alone does not make a key: a stolen cookie must not mint a lasting credential
    if not await run_in_threadpool(state.members.authenticate, account, str(form.get("password", ""))):
        return render(request, "key.html", {"portal_url": settings.web_url, "error": "wrong password"}, 401)
    hashed, credentials = member_key(settings, account)
    await state.market.request(account, "account.key_set", {"account": account, "key_hash": hashed})
    log.info("portal.key_made", account=account)
    return Response(credentials.as_json(), media_type="application/json", headers={
        "Content-Disposition": 'attachment; filename="credentials"', "Cache-Control": "no-store"})


def routes() -> list[Route]:
    return [
        Route("/", home),
        Route("/signup", signup, methods=["GET", "POST"]),
        Route("/confirm/{token}", confirm, methods=["GET", "POST"]),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/password", password, methods=["GET", "POST"]),
        Route("/key", key, methods=["GET", "POST"]),
    ]
