"""Collecting the blobs nobody needs: those referenced only by requests the
ledger refused or rejected, once they are older than the retention period.

Why this keeps ``ledger verify`` and ``replay --verify`` honest: the hash
chain covers each event's stored payload text, where a blob is only its
reference (``{"sha256", "size"}``), never its bytes (``contracts.blobs``,
``ledger.chain``); and no fold reads blob bytes. Removing a blob's bytes
changes no hashed or folded byte. What must stay is every blob a live
thing may still need: whatever a projection names (a job's module, state
and result, a lease's checkpoint) and whatever any other event references.

The SQL lives here rather than in ``ledger.store`` (the writer's store):
it runs only from `marketctl ledger gc`, in one transaction that holds the
writer off the blobs table while it decides (SQLite: the write lock,
taken first; PostgreSQL: a table lock that conflicts with inserts), so a
blob referenced by a request recorded meanwhile is never removed.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import orjson
from sqlalchemy import delete, select, text

from contracts.envelope import format_time, parse_time
from ledger import tables
from ledger.state import ROW_TYPES

#: verdicts that say their cause (``causation_id``) was not taken
REFUSAL_TYPES = ("request.rejected", "job.rejected", "checkpoint.rejected")
#: blobs removed per DELETE statement
DELETE_CHUNK = 500


@dataclass(frozen=True)
class GcReport:
    removed: int
    removed_bytes: int
    #: blobs of refused requests left: inside the retention period, needed elsewhere, or already gone
    kept: int


def blob_references(value) -> set[str]:
    """Every blob sha256 a payload names: blob references, and ``*_sha256`` fields."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                if isinstance(inner, str) and (key == "sha256" or key.endswith("_sha256")):
                    found.add(inner)
                else:
                    stack.append(inner)
        elif isinstance(item, list):
            stack.extend(item)
    return found


def collect_blobs(engine, now: str, older_than: timedelta, dry_run: bool = False) -> GcReport:
    """Remove (unless ``dry_run``) the blobs referenced only by refused or
    rejected requests recorded before ``now - older_than``."""
    cutoff = format_time(parse_time(now) - older_than)
    with engine.begin() as conn:
        _hold_off_the_writer(conn)
        refused = {row[0] for row in conn.execute(
            select(tables.events.c.causation_id).where(tables.events.c.type.in_(REFUSAL_TYPES)))}
        candidates, of_refused, needed = set(), set(), _named_by_projections(conn)
        events = tables.events.c
        rows = conn.execute(select(events.event_id, events.recorded_at, events.payload)
                            .where(events.payload.like('%sha256%')))
        for event_id, recorded_at, payload in rows:
            references = blob_references(orjson.loads(payload))
            if event_id in refused:
                of_refused |= references
            if event_id in refused and recorded_at < cutoff:
                candidates |= references
            else:
                needed |= references
        doomed = sorted(candidates - needed)
        sizes = {}
        for start in range(0, len(doomed), DELETE_CHUNK):
            chunk = doomed[start:start + DELETE_CHUNK]
            sizes.update(conn.execute(select(tables.blobs.c.sha256, tables.blobs.c.size)
                                      .where(tables.blobs.c.sha256.in_(chunk))).all())
        if not dry_run:
            present = sorted(sizes)
            for start in range(0, len(present), DELETE_CHUNK):
                conn.execute(delete(tables.blobs).where(tables.blobs.c.sha256.in_(present[start:start + DELETE_CHUNK])))
    return GcReport(removed=len(sizes), removed_bytes=sum(sizes.values()), kept=len(of_refused - set(sizes)))


def _hold_off_the_writer(conn) -> None:
    if conn.dialect.name == "postgresql":
        # conflicts with the writer's inserts into blobs (ROW EXCLUSIVE), not with readers
        conn.execute(text(f"LOCK TABLE {tables.blobs.name} IN SHARE ROW EXCLUSIVE MODE"))
    else:
        # a write statement takes SQLite's write lock before anything is read
        conn.execute(delete(tables.blobs).where(text("0")))


def _named_by_projections(conn, but: tuple[str, ...] = ()) -> set[str]:
    named: set[str] = set()
    for table_name in ROW_TYPES:
        if table_name in but:
            continue
        table = tables.metadata.tables[table_name]
        for column in table.columns:
            if column.name.endswith("_sha256"):
                named |= {value for (value,) in conn.execute(select(column).where(column.is_not(None)))}
    return named
