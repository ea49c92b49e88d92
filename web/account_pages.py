"""The member's workers, monthly statements, the market report and the price advisor."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from agents.scheduler.advisor import NotPossible, ReportError, advise, read_market
from cli.money import format_credits
from cli.report import SPEED_UNIT, format_advice
from cli.credentials import Credentials, public_amqp_url, public_ca_pem, url_with_key
from cli.keys import new_worker_id
from common.errors import MarketError

from contracts.envelope import utc_now_iso
from contracts.identity import key_hash, new_secret, worker_principal
from ledger.report import schema_text
from ledger.statements import render as render_statement
from contracts.paging import MAX_LIMIT
from web.market import NotAnswered
from web.render import checked_form, flash, render, require_member



# ---- workers ------------------------------------------------------------------------

async def workers_page(request):
    account = await require_member(request)
    workers = await request.app.state.market.ask(account, "workers", mine=True)
    return render(request, "workers.html", {"workers": workers, "values": {"lease_seconds": "60", "slots": "1"}})


def worker_command(credentials: Credentials, slots: int, lease_seconds: int) -> str:
    """The command that starts this worker on the member's machine: it writes the
    worker's credentials file (its own key, nothing of the account's or the market's)
    and runs the worker on it."""
    marketctl = Path(sys.executable).with_name("marketctl")
    path = f"~/.config/market/workers/{credentials.worker_id}.json"
    body = json.dumps({"amqp_url": credentials.amqp_url, "account": credentials.account,
                       "worker_id": credentials.worker_id, "name": credentials.name, "ca_pem": credentials.ca_pem})
    return (f"umask 077 && mkdir -p ~/.config/market/workers && printf '%s\\n' {shlex.quote(body)} > {path} && "
            f"{shlex.quote(str(marketctl))} worker run --credentials {path} "
            f"--slots {slots} --lease-seconds {lease_seconds}")


async def register_worker(request):
    account = await require_member(request)
    form = await checked_form(request)
    values = {k: str(form.get(k, "")).strip() for k in ("name", "lease_seconds", "slots")}
    market, settings = request.app.state.market, request.app.state.settings
    mine = await market.ask(account, "workers", mine=True)
    try:
        if not 1 <= len(values["name"]) <= 100:
            raise ValueError("give the machine a name of 1 to 100 characters")
        if not values["lease_seconds"].isdigit() or not 5 <= int(values["lease_seconds"]) <= 86400:
            raise ValueError("the lease is a whole number of seconds from 5 to 86400")
        if not values["slots"].isdigit() or not 1 <= int(values["slots"]) <= 256:
            raise ValueError("slots is a whole number from 1 to 256")
        # the id says nothing of the account; its random part keeps ids apart
        worker_id = new_worker_id(values["name"])
        secret = new_secret()
        await market.request(account, "worker.registered", {
            "worker_id": worker_id, "name": values["name"], "slots": int(values["slots"]),
            "lease_seconds": int(values["lease_seconds"]), "key_hash": key_hash(secret)})
    except (ValueError, MarketError) as e:
        return render(request, "workers.html", {"workers": mine, "values": values, "error": str(e)}, 400)
    # the key is shown this once: the market keeps only its hash
    credentials = Credentials(url_with_key(public_amqp_url(settings), worker_principal(worker_id), secret),
                              account, worker_id, values["name"], public_ca_pem(settings))
    command = worker_command(credentials, int(values["slots"]), int(values["lease_seconds"]))
    mine = await market.ask(account, "workers", mine=True)
    return render(request, "workers.html", {"workers": mine, "values": values, "command": command,
                                            "worker_id": worker_id},
                  headers={"Cache-Control": "no-store"})


async def revoke_worker(request):
    account = await require_member(request)
    await checked_form(request)
    worker_id = request.path_params["worker_id"]
    try:
        await request.app.state.market.request(account, "worker.revoked", {"worker_id": worker_id})
    except MarketError as e:
        flash(request, str(e), "error")
    else:
        flash(request, f"worker {worker_id} revoked: its key no longer connects")
    return RedirectResponse("/workers", 303)


# ---- statements ---------------------------------------------------------------------

async def _statement(request, account: str, month: str, after: str | None = None, limit: int | None = None):
    """A page of the member's statement lines: (answer, the next page's cursor or None)."""
    # the statement query parses the month and refuses a future one itself, by the ledger's clock
    try:
        return await request.app.state.market.ask_page(account, "statement", month=month, after=after, limit=limit)
    except NotAnswered as e:
        raise HTTPException(400, str(e)) from e


async def statements_page(request):
    account = await require_member(request)
    month = request.query_params.get("month") or utc_now_iso()[:7]
    answer, after = await _statement(request, account, month, request.query_params.get("after") or None)
    return render(request, "statements.html", {"month": answer["month"], "answer": answer, "next": after,
                                               "statement": answer["statements"][0] if answer["statements"] else None})


async def statement_csv(request):
    account = await require_member(request)
    month = request.query_params.get("month") or utc_now_iso()[:7]
    # the download is the whole month: every page of lines, the largest pages there are
    answer, after = await _statement(request, account, month, limit=MAX_LIMIT)
    while after:
        more, after = await _statement(request, account, month, after, limit=MAX_LIMIT)
        answer["statements"][0]["lines"].extend(more["statements"][0]["lines"])
    return Response(render_statement(answer, "csv"), media_type="text/csv", headers={
        "Content-Disposition": f'attachment; filename="statement-{account}-{answer["month"]}.csv"'})


# ---- the report and the advisor ------------------------------------------------------

async def report_xml(request):
    account = await require_member(request)
    xml = await request.app.state.market.ask(account, "report")
    return Response(xml, media_type="application/xml", headers={
        "Content-Disposition": f'attachment; filename="market-report-{utc_now_iso()[:10]}.xml"'})


async def report_schema(request):
    # public and stable: a report names this address as its schema
    return Response(schema_text(), media_type="application/xml")


async def report_page(request):
    await require_member(request)
    return render(request, "report.html")


async def advisor(request):
    account = await require_member(request)
    speed_text = request.query_params.get("speed", "").strip()
    context = {"speed": speed_text, "unit": SPEED_UNIT}
    if not speed_text:
        return render(request, "advisor.html", context)
    if not (speed_text.isascii() and speed_text.isdigit()) or int(speed_text) < 1:
        context["error"] = f"the speed is a positive whole number of kops, not {speed_text!r}"
        return render(request, "advisor.html", context, 400)
    try:
        market = read_market((await request.app.state.market.ask(account, "report")).encode("utf-8"))
        advice = advise(market, int(speed_text))
    except NotPossible as e:
        context["error"] = str(e)
        return render(request, "advisor.html", context, 200)
    except ReportError as e:
        raise HTTPException(500, f"the market report could not be read: {e}") from e
    context.update(advice=format_advice(advice, market), price=format_credits(advice.price))
    return render(request, "advisor.html", context)


def routes() -> list[Route]:
    return [
        Route("/workers", workers_page, methods=["GET"]),
        Route("/workers", register_worker, methods=["POST"]),
        Route("/workers/{worker_id}/revoke", revoke_worker, methods=["POST"]),
        Route("/statements", statements_page),
        Route("/statements.csv", statement_csv),
        Route("/report", report_page),
        Route("/report.xml", report_xml),
        Route("/report/market_report.xsd", report_schema),
        Route("/advisor", advisor),
    ]
