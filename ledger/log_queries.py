"""A job's logs and artifacts, for its owner only (issue 17): ``marketctl logs``, ``result --artifacts``.

What a lease printed is shown by one rule (ledger.money.output_shown): **no
output without payment**. So:

- an ended lease shows the output its worker's report kept (bounded, head
  and tail) only when its time was paid; an expired, refused or outvoted
  lease shows nothing, whatever was streamed while it ran;
- a running lease's live chunks (``lease.output``, sent by its worker every
  second; sandbox.live_output) are shown while the lease is open, to the
  job's owner, and never after: once it ends, only its report's output can
  be shown, and only if paid. A replica's lease streams to nobody (its
  output waits for the quorum, ledger.fold_replicas).
  The chunks stay in the log, which is append-only; this rule decides who
  reads them. A job cannot make its own lease end unpaid: an error, a crash
  or a kill at the deadline is reported and paid; only a worker that never
  reports (or a replica outvoted) leaves a lease unpaid, and then the
  owner saw at most what streamed before.
- a chunk counts only if its worker's key (or owner) sent it, and only its
  first ``LIVE_OUTPUT_CHARS`` characters (by the chunk's offset).
"""
from __future__ import annotations

import base64
import signal

import orjson
from sqlalchemy import select

from contracts.events import LIVE_OUTPUT_CHARS
from contracts.identity import worker_principal
from ledger import tables
from ledger.money import output_shown
from ledger.queries import QueryError, _owned_job, _report_of, query

#: live chunks read per question: a follower asks again from where it stopped
CHUNKS_PER_ANSWER = 500
#: leases listed at most, the newest
MOST_LEASES = 100


def exit_status(exit_code) -> str | None:
    """An errored lease's exit as its owner reads it: ``exit code 3``, ``killed by signal 9 (SIGKILL)``."""
    if exit_code is None:
        return None
    if exit_code >= 0:
        return f"exit code {exit_code}"
    signum = -exit_code
    name = signal.Signals(signum).name if signum in signal.valid_signals() else "unknown"
    return f"killed by signal {signum} ({name})"


def failure_reason(conn, row) -> str | None:
    """Why a failed job failed (its ``job.failed`` verdict: the last event that changed it)."""
    if row.status != "failed":
        return None
    ev = tables.events.c
    event = conn.execute(select(ev.type, ev.payload).where(ev.seq == row.folded_seq)).first()
    return orjson.loads(event.payload).get("reason") if event is not None and event.type == "job.failed" else None


@query("job_logs")
def job_logs(conn, actor: str, job_id: str, lease_id: str | None = None, after: int = 0) -> dict:
    """The asker's job's leases in grant order, each with its kept output (if
    paid), and an errored one's exit status and traceback; the running
    lease's live output after sequence ``after`` (``live.next`` is where to
    ask from next time)."""
    row = _owned_job(conn, actor, job_id)
    l = tables.leases.c
    stmt = select(tables.leases).where(l.job_id == row.job_id)
    if lease_id is not None:
        stmt = stmt.where(l.lease_id == str(lease_id))
    leases = conn.execute(stmt.order_by(l.granted_at.desc()).limit(MOST_LEASES)).all()[::-1]
    if lease_id is not None and not leases:
        raise QueryError(f"job {job_id} has no lease {lease_id}")
    # a replica's leases are paid only once its quorum settles them (ledger.fold_replicas)
    paid = row.parent_id is None or row.settled == "paid"
    shown, live = [], None
    for lease in leases:
        if lease.outcome == "open":
            if row.parent_id is None:
                live = _live(conn, lease, int(after))
            shown.append(_lease_entry(lease))
            continue
        shown.append(_ended(conn, lease, paid))
    return {"job_id": row.job_id, "status": row.status, "error": row.error, "reason": failure_reason(conn, row),
            "leases": shown, "live": live}


def _lease_entry(lease) -> dict:
    return {"lease_id": lease.lease_id, "worker_id": lease.worker_id, "outcome": lease.outcome,
            "checked_out": lease.granted_at, "checked_in": lease.ended_at, "executed_ms": lease.executed_ms,
            "output": "", "shown": False, "error": None, "exit_code": None, "exit": None}


def _ended(conn, lease, paid: bool) -> dict:
    entry = _lease_entry(lease)
    event = _report_of(conn, lease) if paid else None
    if event is None or not output_shown(lease.outcome, event.type, event.version):
        return entry
    report = orjson.loads(event.payload)
    if report.get("lease_id") != lease.lease_id:
        return entry
    entry.update(output=report.get("output", ""), shown=True)
    if event.type == "job.errored":
        entry.update(error=report.get("error"), exit_code=report.get("exit_code"),
                     exit=exit_status(report.get("exit_code")))
    return entry


def _live(conn, lease, after: int) -> dict:
    """The open lease's chunks recorded after ``after``, from its worker only, within the live bound."""
    workers = tables.workers.c
    owner = conn.execute(select(workers.owner).where(workers.worker_id == lease.worker_id)).scalar()
    speakers = {worker_principal(lease.worker_id), owner}
    ev = tables.events.c
    rows = conn.execute(select(ev.seq, ev.actor, ev.payload)
                        .where(ev.type == "lease.output", ev.recorded_at >= lease.granted_at, ev.seq > after)
                        .order_by(ev.seq).limit(CHUNKS_PER_ANSWER)).all()
    texts, capped = [], False
    for chunk in rows:
        payload = orjson.loads(chunk.payload)
        if payload.get("lease_id") != lease.lease_id or chunk.actor not in speakers:
            continue
        text, offset = payload.get("text", ""), payload.get("offset", 0)
        if offset + len(text) > LIVE_OUTPUT_CHARS:
            text, capped = text[:max(0, LIVE_OUTPUT_CHARS - offset)], True
        texts.append(text)
        capped = capped or offset + len(text) >= LIVE_OUTPUT_CHARS
    return {"lease_id": lease.lease_id, "worker_id": lease.worker_id, "text": "".join(texts),
            "next": rows[-1].seq if rows else after, "capped": capped}


@query("artifacts")
def artifacts(conn, actor: str, job_id: str) -> dict:
    """The tar of the files the asker's completed job left in ``outputs/`` (base64), or why there is none."""
    row = _owned_job(conn, actor, job_id)
    if row.parent_id is not None:
        raise QueryError(f"job {job_id} is a replica of {row.parent_id}: a replicated job has no artifacts")
    if row.status != "completed":
        raise QueryError(f"job {job_id} has no artifacts: it is {row.status}")
    if row.artifacts_sha256 is None:
        return {"job_id": row.job_id, "sha256": None, "data": None}
    data = conn.execute(select(tables.blobs.c.data).where(tables.blobs.c.sha256 == row.artifacts_sha256)).scalar()
    if data is None:
        # issue 17: uploaded to the blob store; the query side adds the owner's read grant
        return {"job_id": row.job_id, "sha256": row.artifacts_sha256, "stored": True}
    return {"job_id": row.job_id, "sha256": row.artifacts_sha256, "data": base64.b64encode(data).decode("ascii")}
