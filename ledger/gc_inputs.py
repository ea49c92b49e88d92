"""Collecting input files (issue 17): a blob in the store that no job needs
any more, once it is older than MARKET_BLOB_RETENTION_SECONDS.

A job needs its inputs while it lives and for the retention period after it
ended (its owner pays nothing to store them meanwhile). A blob no job names
(an upload whose submission was rejected, or never sent) goes once it is
older than the retention period too: uploads come before their submission,
so a young one may be a submission on its way. The ledger's events keep the
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


def needed_inputs(rows, cutoff: str) -> set[str]:
    """The sha256 of every input of a job that has not ended, or ended after ``cutoff``.

    ``rows`` are (inputs JSON text, finished_at) pairs of the jobs table."""
    needed: set[str] = set()
    for inputs, finished_at in rows:
        if inputs and (finished_at is None or finished_at > cutoff):
            needed |= {item["sha256"] for item in orjson.loads(inputs)}
    return needed


def collect_inputs(engine, store: BlobStore, now: str, retention_seconds: float,
                   dry_run: bool = False) -> InputGcReport:
    """Remove (unless ``dry_run``) the store's blobs that no job needs and that
    are older than ``retention_seconds`` at ``now`` (ledger time, ISO)."""
    from datetime import timedelta

    cutoff_time = parse_time(now) - timedelta(seconds=retention_seconds)
    cutoff = format_time(cutoff_time)
    with engine.connect() as conn:
        rows = conn.execute(select(tables.jobs.c.inputs, tables.jobs.c.finished_at)
                            .where(tables.jobs.c.inputs != "")).all()
        # whatever a projection names (a job's state or result, a lease's checkpoint) stays too:
        # the store holds only inputs today, but a state put there later must not be collected
        named = _named_by_projections(conn)
    needed = needed_inputs(rows, cutoff) | named
    removed = removed_bytes = kept = 0
    for blob in list(store.entries()):
        if blob.sha256 in needed or blob.stored_at > cutoff_time.timestamp():
            kept += 1
            continue
        if not dry_run:
            store.delete(blob.sha256)
        removed, removed_bytes = removed + 1, removed_bytes + blob.size
    return InputGcReport(removed, removed_bytes, kept)
