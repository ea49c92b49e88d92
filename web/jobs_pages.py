"""The member's jobs: dashboard, submit (upload or prebuilt), list with live progress,
one job's page, its result, reprice, cancel, and the Atom feed of their changes."""
from __future__ import annotations

import base64
import hmac
import json
import re

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from broker_setup.rpc import Refused
from cli.money import AmountError, format_credits, parse_credits
from contracts.envelope import parse_time, utc_now_iso
from contracts.package import PackageError, ResultNotJSON, new_job_id, result_as_json, submission_payload
from ledger.fold import TERMINAL_JOB_STATES
from web import map_pages
from web.artifact_pages import artifacts_of, routes as artifact_routes
from web.feed import atom_feed, feed_signature, feed_url, job_changes
from web.market import NotAnswered
from web.packaging import build_in_child
from web.prebuilt import BY_SLUG, CATALOGUE
from contracts.inputs import MAX_INPUTS
from web.inputs import InputProblem, store_inputs, uploaded_files
from web.render import checked_form, credits, flash, render, require_member, seconds, when

#: a job's result shown on its page up to this many characters
RESULT_PREVIEW = 20_000


class BadInput(HTTPException):
    def __init__(self, message: str, status: int = 400):
        super().__init__(status, message)


async def _job_or_404(market, account: str, job_id: str) -> dict:
    try:
        return await market.ask(account, "job", job_id=job_id)
    except NotAnswered as e:
        raise HTTPException(404, f"no job {job_id} of yours") from e


def _lease_fraction(job: dict, now: str) -> float | None:
    """How far the current lease has run towards its deadline (0..1), for the progress bar."""
    if not job.get("lease_granted_at") or not job.get("lease_deadline"):
        return None
    start, end = parse_time(job["lease_granted_at"]), parse_time(job["lease_deadline"])
    total = (end - start).total_seconds()
    done = (parse_time(now) - start).total_seconds()
    return max(0.0, min(1.0, done / total)) if total > 0 else 1.0


def _progress(job: dict, now: str) -> dict:
    """What the list shows and refreshes: status, checkpoints, executed time, price, bar."""
    terminal = job["status"] in TERMINAL_JOB_STATES
    fraction = 1.0 if job["status"] == "completed" else map_pages.chunk_fraction(job)
    fraction = _lease_fraction(job, now) if fraction is None else fraction
    return {"job_id": job["job_id"], "status": job["status"], "checkpoint": job["checkpoint"],
            "executed": seconds(job["executed_ms"]), "price": credits(job["price"]),
            "worker_id": job["worker_id"] or "-", "finished_at": when(job["finished_at"]),
            "terminal": terminal, "bar": None if fraction is None else round(fraction * 100),
            "network": job["network"], "detail": job.get("detail") or ""}


async def dashboard(request):
    account = await require_member(request)
    market = request.app.state.market
    jobs = await market.ask(account, "jobs")
    workers = await market.ask(account, "workers", mine=True)
    balance = await market.ask(account, "balance")
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job["status"]] = counts.get(job["status"], 0) + 1
    now = utc_now_iso()
    return render(request, "dashboard.html", {
        "balance": balance, "counts": counts, "jobs": [_progress(j, now) | {"name": j["name"]}
                                                        for j in [j for j in jobs if not j.get("map_id")][:5]],
        "workers": workers, "job_total": len(jobs)})


# ---- submitting -------------------------------------------------------------------

async def submit_page(request):
    await require_member(request)
    return render(request, "submit.html", {"catalogue": CATALOGUE,
                                           "values": {"price": "5", "max_attempts": "3", "replicas": "1"}})


def _parse_common(form) -> tuple[str, int, int]:
    name = str(form.get("name", "")).strip()
    if not 1 <= len(name) <= 200:
        raise BadInput("give the job a name of 1 to 200 characters")
    try:
        price = parse_credits(str(form.get("price", "")), what="price")
    except AmountError as e:
        raise BadInput(str(e)) from e
    attempts_text = str(form.get("max_attempts", "") or "3").strip()
    if not attempts_text.isdigit() or not 1 <= int(attempts_text) <= 100:
        raise BadInput("attempts must be a whole number from 1 to 100")
    return name, price, int(attempts_text)


def parse_replicas(text: str) -> int:
    """The replicas field: 1 (run once), 2 or 3 (a quorum; each replica is paid for)."""
    text = text.strip() or "1"
    if text not in ("1", "2", "3"):
        raise BadInput(f"replicas must be 1, 2 or 3, not {text[:20]!r}")
    return int(text)


async def _upload(form, limit: int) -> tuple[str, bytes]:
    upload = form.get("module")
    if upload is None or isinstance(upload, str) or not upload.filename:
        raise BadInput("choose a .py file to upload")
    if not upload.filename.endswith(".py"):
        raise BadInput(f"{upload.filename} is not a Python file: upload a .py module", 415)
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise BadInput(f"{upload.filename} is larger than the {limit // 1024} KiB a job module may have", 413)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(f"{upload.filename} is not Python source (not UTF-8 text)", 415) from e
    return upload.filename, data


async def submit(request):
    account = await require_member(request)
    settings = request.app.state.settings
    form = await checked_form(request, max_files=1 + MAX_INPUTS, max_fields=20)
    values = {k: str(form.get(k, "")) for k in ("name", "entry", "price", "args", "max_attempts", "network",
                                                 "replicas")}
    try:
        name, price, attempts = _parse_common(form)
        replicas = parse_replicas(values["replicas"])
        entry = values["entry"].strip()
        if not entry.isidentifier():
            raise BadInput(f"{entry!r} is not a function name")
        try:
            args = json.loads(values["args"]) if values["args"].strip() else None
        except json.JSONDecodeError as e:
            raise BadInput(f"the arguments are not valid JSON: {e.msg} at column {e.colno}") from e
        filename, source = await _upload(form, settings.max_blob_bytes)
        job_id = await _submit(request, account, source, filename, entry, args, name, price, attempts,
                               network=values["network"] == "on", replicas=replicas, inputs=uploaded_files(form))
    except InputProblem as e:
        return render(request, "submit.html", {"catalogue": CATALOGUE, "values": values, "error": e.detail},
                      e.status)
    except BadInput as e:
        return render(request, "submit.html", {"catalogue": CATALOGUE, "values": values, "error": e.detail},
                      e.status_code)
    flash(request, f"job {job_id} submitted")
    return RedirectResponse(f"/jobs/{job_id}", 303)


async def _submit(request, account, source, filename, entry, args, name, price, attempts, network=False,
                  replicas=1, inputs=()) -> str:
    state = request.app.state
    try:
        package = await build_in_child(source, entry, args, filename=filename, max_bytes=state.settings.max_blob_bytes)
    except PackageError as e:
        raise BadInput(str(e)) from e
    job_id = new_job_id()
    payload = submission_payload(package, job_id=job_id, name=name, price=price, max_attempts=attempts,
                                 network=network, replicas=replicas)
    if inputs:
        # issue 17: in the blob store before the submission that names them is published
        payload["inputs"] = await store_inputs(state, inputs)
    try:
        await state.market.request(account, "job.submitted", payload)
    except Refused as e:
        raise BadInput(str(e), 409) from e
    return job_id


async def submit_prebuilt(request):
    account = await require_member(request)
    form = await checked_form(request)
    prebuilt = BY_SLUG.get(request.path_params["slug"])
    if prebuilt is None:
        raise HTTPException(404, "no such prebuilt job")
    try:
        name, price, attempts = _parse_common({"name": prebuilt.title, "price": form.get("price") or prebuilt.price})
        if prebuilt.items:
            try:
                job_id = await map_pages.submit_prebuilt_map(request.app.state, account, prebuilt, name, price,
                                                             attempts)
            except map_pages.MapRefused as e:
                raise BadInput(e.reason, e.status) from e
            flash(request, f"{prebuilt.title} submitted as {job_id}")
            return RedirectResponse(f"/jobs/{job_id}", 303)
        job_id = await _submit(request, account, prebuilt.path.read_bytes(), prebuilt.file, prebuilt.entry,
                               prebuilt.args, name, price, attempts)
    except BadInput as e:
        return render(request, "submit.html", {"catalogue": CATALOGUE, "values": {}, "error": e.detail},
                      e.status_code)
    flash(request, f"{prebuilt.title} submitted as {job_id}")
    return RedirectResponse(f"/jobs/{job_id}", 303)


# ---- watching ---------------------------------------------------------------------

async def _jobs_page(request) -> tuple[list, str | None]:
    """The page of the member's jobs the request names (``?after=CURSOR``)."""
    account = await require_member(request)
    try:
        return await request.app.state.market.ask_page(account, "jobs",
                                                       after=request.query_params.get("after") or None)
    except NotAnswered as e:
        raise HTTPException(400, str(e)) from e


async def jobs_page(request):
    jobs, after = await _jobs_page(request)
    now = utc_now_iso()
    return render(request, "jobs.html", {"jobs": [_progress(j, now) | {"name": j["name"]} for j in jobs
                                                  if not j.get("map_id")],  # a map's page lists its chunks
                                         "next": after})


async def jobs_json(request):
    # the page's 2 s poll: the one page it shows, never every job
    jobs, _ = await _jobs_page(request)
    now = utc_now_iso()
    return JSONResponse([_progress(j, now) for j in jobs])


async def job_page(request):
    account = await require_member(request)
    market = request.app.state.market
    job = await _job_or_404(market, account, request.path_params["job_id"])
    if job.get("chunks"):
        return render(request, "map.html", {"job": job} | await map_pages.map_context(market, account, job))
    lease_reports = await market.ask(account, "job_output", job_id=job["job_id"])
    outputs = {o["lease_id"]: o["output"] for o in lease_reports}
    errors = {o["lease_id"]: o.get("error") for o in lease_reports}
    result, result_kind = None, None
    if job["status"] == "completed":
        answer = await market.ask(account, "result", job_id=job["job_id"])
        result, result_kind = _result_preview(answer)
    replicas = await market.ask(account, "job_replicas", job_id=job["job_id"]) if job["replicas"] > 1 else []
    return render(request, "job.html", {"job": job, "progress": _progress(job, utc_now_iso()), "outputs": outputs,
                                        "errors": errors, "replicas": replicas,
                                        "result": result, "result_kind": result_kind,
                                        "artifacts": await artifacts_of(market, account, job)})


def _result_preview(answer: dict) -> tuple[str | None, str]:
    """(the start of a JSON result, or None; its kind: json, pickle, or stored: issue 17, in
    the blob store, too large for the portal to show or relay)."""
    if answer.get("stored"):
        return None, "stored"
    try:
        text = json.dumps(result_as_json(base64.b64decode(answer["data"])), indent=2)
    except ResultNotJSON:
        return None, "pickle"
    return text[:RESULT_PREVIEW] + ("\n..." if len(text) > RESULT_PREVIEW else ""), "json"


async def job_result(request):
    account = await require_member(request)
    market = request.app.state.market
    job_id = request.path_params["job_id"]
    await _job_or_404(market, account, job_id)
    try:
        answer = await market.ask(account, "result", job_id=job_id)
    except NotAnswered as e:
        raise HTTPException(409, str(e)) from e
    if answer.get("stored"):
        # issue 17: a result too large for a message is in the blob store; the portal does not relay it
        raise HTTPException(409, f"job {job_id}'s result is in the blob store: "
                                 f"`marketctl result {job_id} --raw FILE` downloads it")
    data = base64.b64decode(answer["data"])
    try:
        body, kind, suffix = json.dumps(result_as_json(data), indent=2).encode(), "application/json", "json"
    except ResultNotJSON:
        # the portal never unpickles: the bytes go to the owner as they are (tag byte first)
        body, kind, suffix = data, "application/octet-stream", "pickle"
    return Response(body, media_type=kind, headers={
        "Content-Disposition": f'attachment; filename="{job_id}-result.{suffix}"'})


async def reprice(request):
    account = await require_member(request)
    form = await checked_form(request)
    market = request.app.state.market
    job = await _job_or_404(market, account, request.path_params["job_id"])
    try:
        price = parse_credits(str(form.get("price", "")), what="price")
        await market.request(account, "job.repriced", {"job_id": job["job_id"], "price": price})
    except AmountError as e:
        raise BadInput(str(e)) from e
    except Refused as e:
        raise BadInput(str(e), 409) from e
    flash(request, f"{job['job_id']}: {format_credits(price)} credits per hour from its next lease")
    return RedirectResponse(_back(form, f"/jobs/{job['job_id']}"), 303)


async def cancel(request):
    account = await require_member(request)
    form = await checked_form(request)
    market = request.app.state.market
    job = await _job_or_404(market, account, request.path_params["job_id"])
    try:
        await market.request(account, "job.cancelled", {"job_id": job["job_id"]})
    except Refused as e:
        raise BadInput(str(e), 409) from e
    flash(request, f"{job['job_id']} cancelled")
    return RedirectResponse(_back(form, f"/jobs/{job['job_id']}"), 303)


def _back(form, default: str) -> str:
    target = str(form.get("back", ""))
    return target if re.fullmatch(r"/jobs(/[A-Za-z0-9_.-]+)?", target) else default


# ---- the Atom feed ------------------------------------------------------------------

async def feed(request):
    """A private feed: its address carries a signature instead of a session (feed readers have none)."""
    account, signature = request.path_params["account"], request.path_params["signature"]
    if not hmac.compare_digest(signature, feed_signature(request.app.state.feed_key, account)):
        raise HTTPException(404, "no such feed")
    market = request.app.state.market
    details = await market.ask(account, "job_histories", last=20)
    xml = atom_feed(account, feed_url(request, account), request.app.state.settings.web_url, job_changes(details))
    return Response(xml, media_type="application/atom+xml")


def routes() -> list[Route]:
    return [
        Route("/dashboard", dashboard),
        Route("/submit", submit_page, methods=["GET"]),
        Route("/submit", submit, methods=["POST"]),
        Route("/prebuilt/{slug}", submit_prebuilt, methods=["POST"]),
        Route("/jobs", jobs_page),
        Route("/jobs.json", jobs_json),
        Route("/jobs/{job_id}", job_page),
        Route("/jobs/{job_id}/result", job_result),
        Route("/jobs/{job_id}/reprice", reprice, methods=["POST"]),
        Route("/jobs/{job_id}/cancel", cancel, methods=["POST"]),
        Route("/feed/{account}/{signature}.atom", feed),
        *artifact_routes(),
    ]
