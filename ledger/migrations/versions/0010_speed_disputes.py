"""Speed disputes: canaries, and what a worker's disputes recorded.

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-04

``jobs.canary``: a probe hidden among paid work (its lease says probe
false). ``workers.disputes`` and ``disputed_*``: how many canaries ran
slower than the worker's probed speed allows, and the last one (ledger.fold_speeds).
No event before this revision was a canary or a dispute, so the defaults
are what a replay of the log gives.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("canary", sa.Boolean, nullable=False, server_default="0"))
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("disputes", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("disputed_at", sa.String(32)))
        batch.add_column(sa.Column("disputed_probed", sa.BigInteger))
        batch.add_column(sa.Column("disputed_delivered", sa.BigInteger))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        for name in ("disputed_delivered", "disputed_probed", "disputed_at", "disputes"):
            batch.drop_column(name)
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("canary")
