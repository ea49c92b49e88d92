"""A replicated job's replicas and their votes, for its owner (the portal's job page)."""
from __future__ import annotations

from sqlalchemy import select

from ledger import tables
from ledger.queries import _owned_job, query

#: how much of a result's sha256 a vote shows: enough to see which agree
SHOWN_SHA = 12


@query("job_replicas")
def job_replicas(conn, actor: str, job_id: str) -> list[dict]:
    """The replicas of one of the asker's replicated jobs (empty for a job run
    once), each with its vote: the result it reported (a sha256 prefix: the
    portal never opens results) and, once the quorum decided, whether it
    agreed. ``restarted``: a checkpoint of it was outvoted at a safe-point
    count, and it started again on another owner's worker."""
    parent = _owned_job(conn, actor, job_id)
    j = tables.jobs.c
    rows = conn.execute(select(j.job_id, j.status, j.checkpoint, j.worker_id, j.result_sha256, j.barred_owners,
                               j.executed_ms).where(j.parent_id == parent.job_id).order_by(j.job_id)).all()
    return [{"job_id": r.job_id, "status": r.status, "checkpoint": r.checkpoint, "worker_id": r.worker_id,
             "executed_ms": r.executed_ms, "result": r.result_sha256[:SHOWN_SHA] if r.result_sha256 else None,
             "vote": _vote(parent, r), "restarted": bool(r.barred_owners)} for r in rows]


def _vote(parent, replica) -> str:
    if replica.result_sha256 is None:
        return "no result yet" if parent.status == "validating" else "none"
    if parent.status == "completed":
        return "agreed" if replica.result_sha256 == parent.result_sha256 else "outvoted"
    if parent.status == "validating":
        return "waiting for the quorum"
    return "no majority"  # the job failed: its replicas' results all differed
