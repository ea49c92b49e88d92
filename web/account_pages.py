"""The member's workers, monthly statements, the market report and the price advisor."""
from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from urllib.parse import quote

from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Route

from agents.scheduler.advisor import NotPossible, ReportError, advise, read_market
from cli.money import format_credits
from cli.report import SPEED_UNIT, format_advice
from cli.worker import worker_id_from
from common.errors import MarketError
from common.settings import Settings
from contracts.envelope import utc_now_iso
from contracts.events import ID_PATTERN
from ledger.report import schema_text
from ledger.statements import render as render_statement
from web.market import NotAnswered
from web.render import checked_form, render, require_member

REPO = Path(__file__).resolve().parent.parent
DEVELOPMENT_PASSWORD = Settings.service_password


# ---- workers ------------------------------------------------------------------------

async def workers_page(request):
    account = await require_member(request)
    workers = await request.app.state.market.ask(account, "workers", mine=True)
    return render(request, "workers.html", {"workers": workers, "values": {"lease_seconds": "60", "slots": "1"}})


def worker_command(settings, account: str, name: str, worker_id: str, lease_seconds: int, slots: int) -> str:
    """The command that starts this worker on this machine, as the member."""
    marketctl = Path(sys.executable).with_name("marketctl")
    parts = [f"MARKET_HOME={shlex.quote(str(Path(settings.home).resolve()))}",
             f"MARKET_AMQP_URL={shlex.quote(_shown_amqp_url(settings))}"]
    parts += [shlex.quote(str(marketctl)), "--as", shlex.quote(account), "worker", "run", "--name", shlex.quote(name),
              "--id", shlex.quote(worker_id), "--lease-seconds", str(lease_seconds), "--slots", str(slots)]
    return f"cd {shlex.quote(str(REPO))} && " + " ".join(parts)


def _shown_amqp_url(settings) -> str:
    # the development password (`marketctl up` prints it too) is shown; a real one never is
    if settings.service_password == DEVELOPMENT_PASSWORD:
        return settings.amqp_url
    return settings.amqp_url.replace(quote(settings.service_password, safe=""), "PASSWORD")


async def register_worker(request):
    account = await require_member(request)
    form = await checked_form(request)
    values = {k: str(form.get(k, "")).strip() for k in ("name", "lease_seconds", "slots")}
    market = request.app.state.market
    everyone = await market.ask(account, "workers")
    mine = [w for w in everyone if w["owner"] == account]
    try:
        if not 1 <= len(values["name"]) <= 100:
            raise ValueError("give the machine a name of 1 to 100 characters")
        worker_id = worker_id_from(f"{account}-{values['name']}")
        if not re.match(ID_PATTERN, worker_id):
            raise ValueError(f"cannot make a worker id from {values['name']!r}")
        if any(w["worker_id"] == worker_id and w["owner"] != account for w in everyone):
            raise ValueError(f"the worker id {worker_id} is taken: choose another name")
        if not values["lease_seconds"].isdigit() or not 5 <= int(values["lease_seconds"]) <= 86400:
            raise ValueError("the lease is a whole number of seconds from 5 to 86400")
        if not values["slots"].isdigit() or not 1 <= int(values["slots"]) <= 256:
            raise ValueError("slots is a whole number from 1 to 256")
    except (ValueError, MarketError) as e:
        return render(request, "workers.html", {"workers": mine, "values": values, "error": str(e)}, 400)
    command = worker_command(request.app.state.settings, account, values["name"], worker_id,
                             int(values["lease_seconds"]), int(values["slots"]))
    return render(request, "workers.html", {"workers": mine, "values": values, "command": command,
                                            "worker_id": worker_id})


# ---- statements ---------------------------------------------------------------------

async def _statement(request, account: str, month: str) -> dict:
    # the statement query parses the month and refuses a future one itself, by the ledger's clock
    try:
        return await request.app.state.market.ask(account, "statement", month=month)
    except NotAnswered as e:
        raise HTTPException(400, str(e)) from e


async def statements_page(request):
    account = await require_member(request)
    month = request.query_params.get("month") or utc_now_iso()[:7]
    answer = await _statement(request, account, month)
    return render(request, "statements.html", {"month": answer["month"], "answer": answer,
                                               "statement": answer["statements"][0] if answer["statements"] else None})


async def statement_csv(request):
    account = await require_member(request)
    answer = await _statement(request, account, request.query_params.get("month") or utc_now_iso()[:7])
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
        Route("/statements", statements_page),
        Route("/statements.csv", statement_csv),
        Route("/report", report_page),
        Route("/report.xml", report_xml),
        Route("/report/market_report.xsd", report_schema),
        Route("/advisor", advisor),
    ]
