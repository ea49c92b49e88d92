"""Collecting the blob store (issue 17): a blob in the store that no job needs
any more, once it is older than MARKET_BLOB_RETENTION_SECONDS.

A job needs its inputs, and its states and result that were too large for a
message (uploaded by its workers), while it lives and for the retention
period after it ended (its owner pays nothing to store them meanwhile); a
map's chunk or a replica lives as long as its parent. A blob no job names
(an upload whose submission was rejected, or never sent) goes once it is
older than the retention period too: uploads come before their submission,
so a young one may be a submission on its way. An upload key left behind
(``uploads/<id>/<what>``: a lease that expired before its report, an upload
grant never followed by a submission) goes once it is older than the
retention period, far longer than any lease or grant lives. The ledger's events keep the
references, never the bytes, so ``ledger verify`` and ``replay --verify``
are unchanged by a collection (see ledger.gc).
"""
from __future__ import annotations

from dataclasses import dataclass

import orjson
from sqlalchemy import select

from blobstore import BlobStore
from contracts.envelope import format_time, parse_time
from ledger import tables
from ledger.gc import _named_by_projections


@dataclass(frozen=True)
class InputGcReport:
    removed: int
    removed_bytes: int
    #: blobs left: needed by a job, or younger than the retention period
    kept: int
    #: uploads nobody adopted, or adopted and left behind (a lease that expired,
    #: a submission never sent, a ledger stopped before it discarded one)
    removed_uploads: int = 0
    removed_upload_bytes: int = 0


#: the columns of a job's own blobs (its module, states, result, artifacts, reduce module)
JOB_BLOB_COLUMNS = tuple(column.name for column in tables.jobs.columns if column.name.endswith("_sha256"))


def living_jobs(rows, cutoff: str) -> set[str]:
    """The ids of the jobs that have not ended, or ended after ``cutoff``, and of every
    job under one of those (a map's chunks, a replicated job's replicas).

    ``rows`` have ``job_id``, ``finished_at``, ``map_id`` and ``parent_id``."""
    parents = {row.job_id: row.map_id or row.parent_id for row in rows}
    alive = {row.job_id for row in rows if row.finished_at is None or row.finished_at > cutoff}
    return {job_id for job_id in parents if job_id in alive or parents[job_id] in alive}


def needed_by_jobs(job_rows, lease_rows, cutoff: str) -> set[str]:
    """The sha256 of every blob a living job (:func:`living_jobs`) needs: its inputs, its
    own blobs, and the state each of its leases started from.

    ``job_rows`` have the columns above and ``inputs`` (JSON text); ``lease_rows`` are
    (job_id, state_sha256) pairs."""
    living = living_jobs(job_rows, cutoff)
    needed: set[str] = set()
    for row in job_rows:
        if row.job_id in living:
            needed |= {value for value in (getattr(row, name) for name in JOB_BLOB_COLUMNS) if value}
            if row.inputs:
                needed |= {item["sha256"] for item in orjson.loads(row.inputs)}
    return needed | {state for job_id, state in lease_rows if job_id in living}


def collect_inputs(engine, store: BlobStore, now: str, retention_seconds: float,
                   dry_run: bool = False) -> InputGcReport:
    """Remove (unless ``dry_run``) the store's blobs that no job needs and that
    are older than ``retention_seconds`` at ``now`` (ledger time, ISO)."""
    from datetime import timedelta

    cutoff_time = parse_time(now) - timedelta(seconds=retention_seconds)
    cutoff = format_time(cutoff_time)
    j = tables.jobs.c
    with engine.connect() as conn:
        job_rows = conn.execute(select(j.job_id, j.finished_at, j.map_id, j.parent_id, j.inputs,
                                       *(j[name] for name in JOB_BLOB_COLUMNS))).all()
        lease_rows = conn.execute(select(tables.leases.c.job_id, tables.leases.c.state_sha256)).all()
        # whatever another projection names stays too (the jobs' and leases' blobs are judged above)
        named = _named_by_projections(conn, but=("jobs", "leases"))
    needed = needed_by_jobs(job_rows, lease_rows, cutoff) | named
    removed = removed_bytes = kept = 0
    for blob in list(store.entries()):
        if blob.sha256 in needed or blob.stored_at > cutoff_time.timestamp():
            kept += 1
            continue
        if not dry_run:
            store.delete(blob.sha256)
        removed, removed_bytes = removed + 1, removed_bytes + blob.size
    uploads = [upload for upload in store.uploads() if upload.stored_at <= cutoff_time.timestamp()]
    if not dry_run:
        for upload in uploads:
            store.discard_upload(upload.key)
    return InputGcReport(removed, removed_bytes, kept, len(uploads), sum(upload.size for upload in uploads))
