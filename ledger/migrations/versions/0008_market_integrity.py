"""Market integrity: credit held by open leases, quarantine by distinct workers.

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-04

``accounts.held``: the maximum cost of the account's open leases, held
against balance plus credit limit (ledger.fold_money). ``jobs.funds_needed``:
what a held job waits for. ``jobs.expired_workers``: the workers whose leases
of the job expired since its last checkpoint (quarantine counts workers).

The projections are folds of the log, so the new columns are filled the way
a replay of the log would fill them: the holds of the leases open now, and
the expired workers of each job's leases since its last checkpoint.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("held", sa.BigInteger, nullable=False, server_default="0"))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("funds_needed", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("expired_workers", sa.Text, nullable=False, server_default=""))
    _fill(op.get_bind())


def _fill(conn) -> None:
    from ledger.fold_money import lease_hold

    held: dict[str, int] = {}
    for owner, seconds, price in conn.execute(sa.text(
            "SELECT j.owner, l.lease_seconds, l.price FROM leases l JOIN jobs j ON j.job_id = l.job_id "
            "WHERE l.outcome = 'open' AND NOT j.probe")):
        held[owner] = held.get(owner, 0) + lease_hold(seconds, price)
    for owner, amount in held.items():
        conn.execute(sa.text("UPDATE accounts SET held = :held WHERE name = :name"), {"held": amount, "name": owner})
    expired: dict[str, set[str]] = {}
    for job_id, worker_id, outcome in conn.execute(sa.text(
            "SELECT l.job_id, l.worker_id, l.outcome FROM leases l JOIN jobs j ON j.job_id = l.job_id "
            "WHERE j.expiries > 0 ORDER BY l.folded_seq")):
        if outcome == "checkpointed":
            expired.pop(job_id, None)
        elif outcome == "expired":
            expired.setdefault(job_id, set()).add(worker_id)
    for job_id, workers in expired.items():
        conn.execute(sa.text("UPDATE jobs SET expired_workers = :workers WHERE job_id = :job_id"),
                     {"workers": " ".join(sorted(workers)), "job_id": job_id})


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("expired_workers")
        batch.drop_column("funds_needed")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("held")
