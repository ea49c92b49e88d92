"""The ledger at scale (issue 16): postings by account, indexes of open jobs
and leases, the report's counters.

Revision ID: 0016
Revises: 0011
Create Date: 2026-12-04

``postings``: one row per posting leg of every money event, under its
account and month, so that a member's statement reads only its own rows
(``ix_postings_account_month``). The fold writes them from now on; the
upgrade backfills them from the money events already in the log, with the
same ``ledger.postings.posting_rows`` the fold uses (a deposit the ledger
refused, i.e. with a ``request.rejected`` caused by it, posts nothing).

``report_counters``: the ended dispatches summed per (worker, outcome) and
per (price band, outcome), which the report shows instead of listing every
job and lease (``ledger.report_counters``); backfilled from ``leases``.
"""
from __future__ import annotations

import bisect

import orjson
import sqlalchemy as sa
from alembic import op

from ledger.fold import Recorded, derived_event_id
from ledger.postings import POSTING_TYPES, posting_rows
from ledger.report_counters import counter_id, price_band

revision = "0016"
down_revision = "0014"
branch_labels = None
depends_on = None

#: money events read per statement while backfilling
BACKFILL_CHUNK = 5_000


def upgrade() -> None:
    postings = op.create_table(
        "postings",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("leg", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("time", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("job_id", sa.String(64)),
        sa.Column("lease_id", sa.String(64)),
        sa.Column("worker_id", sa.String(64)),
        sa.Column("executed_ms", sa.BigInteger),
        sa.Column("price", sa.BigInteger),
        sa.Column("commission", sa.BigInteger),
        sa.Column("reference", sa.Text),
    )
    _backfill(op.get_bind(), postings)
    op.create_index("ix_postings_account_month", "postings", ["account", "month", "seq"])
    counters = op.create_table(
        "report_counters",
        sa.Column("counter_id", sa.String(160), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("dispatches", sa.BigInteger, nullable=False),
        sa.Column("executed_ms", sa.BigInteger, nullable=False),
        sa.Column("folded_seq", sa.BigInteger, nullable=False),
    )
    _backfill_counters(op.get_bind(), counters)
    # the ledger agent's start-up reads only open jobs and leases (ledger.history)
    open_jobs = sa.text("status NOT IN ('cancelled', 'completed', 'failed', 'quarantined')")
    open_leases = sa.text("outcome = 'open'")
    op.create_index("ix_jobs_open", "jobs", ["job_id"], sqlite_where=open_jobs, postgresql_where=open_jobs)
    op.create_index("ix_leases_open", "leases", ["worker_id"], sqlite_where=open_leases,
                    postgresql_where=open_leases)


def _backfill(conn, postings) -> None:
    events = sa.table("events", *(sa.column(name) for name in (
        "seq", "event_id", "type", "version", "occurred_at", "recorded_at", "actor", "correlation_id",
        "causation_id", "payload")))
    # an event counts in the month whose sequence range holds it (ledger.months)
    months = sa.table("months", sa.column("month"), sa.column("first_seq"))
    starts = conn.execute(sa.select(months.c.first_seq, months.c.month).order_by(months.c.first_seq)).all()
    firsts = [first for first, _ in starts]
    after = 0
    while True:
        rows = conn.execute(sa.select(events).where(events.c.seq > after, events.c.type.in_(POSTING_TYPES))
                            .order_by(events.c.seq).limit(BACKFILL_CHUNK)).all()
        if not rows:
            return
        # a refusal is the first verdict its deposit derives: found by its id, which is unique and indexed
        verdicts = {derived_event_id(r.event_id, 0): r.event_id for r in rows if r.type == "account.deposited"}
        refused = {verdicts[v] for v in conn.execute(sa.select(events.c.event_id).where(
            events.c.event_id.in_(list(verdicts)), events.c.type == "request.rejected")).scalars()} \
            if verdicts else set()
        legs = []
        for r in rows:
            event = Recorded(r.seq, r.event_id, r.type, r.version, r.occurred_at, r.recorded_at, r.actor,
                             r.correlation_id, r.causation_id, orjson.loads(r.payload))
            month = starts[bisect.bisect_right(firsts, r.seq) - 1][1]
            legs += posting_rows(event, r.event_id in refused, month)
        if legs:
            conn.execute(postings.insert(), legs)
        after = rows[-1].seq


def _backfill_counters(conn, counters) -> None:
    """The sums the fold would hold: every ended lease of a market job, by
    worker and by price band (each row's folded_seq: its last lease's)."""
    leases = sa.table("leases", *(sa.column(name) for name in (
        "lease_id", "job_id", "worker_id", "price", "outcome", "executed_ms", "folded_seq")))
    jobs = sa.table("jobs", sa.column("job_id"), sa.column("probe"))
    sums: dict[str, dict] = {}
    after = ""
    while True:
        rows = conn.execute(sa.select(leases, jobs.c.probe).join(jobs, jobs.c.job_id == leases.c.job_id)
                            .where(leases.c.lease_id > after, leases.c.outcome != "open")
                            .order_by(leases.c.lease_id).limit(BACKFILL_CHUNK)).all()
        if not rows:
            break
        for r in rows:
            if r.probe:
                continue
            for kind, subject in (("worker", r.worker_id), ("band", str(price_band(r.price)[0]))):
                key = counter_id(kind, subject, r.outcome)
                row = sums.setdefault(key, {"counter_id": key, "kind": kind, "subject": subject,
                                            "outcome": r.outcome, "dispatches": 0, "executed_ms": 0, "folded_seq": 0})
                row["dispatches"] += 1
                row["executed_ms"] += r.executed_ms
                row["folded_seq"] = max(row["folded_seq"], r.folded_seq)
        after = rows[-1].lease_id
    if sums:
        conn.execute(counters.insert(), list(sums.values()))


def downgrade() -> None:
    op.drop_table("report_counters")
    op.drop_index("ix_leases_open", table_name="leases")
    op.drop_index("ix_jobs_open", table_name="jobs")
    op.drop_index("ix_postings_account_month", table_name="postings")
    op.drop_table("postings")
