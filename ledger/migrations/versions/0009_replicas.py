"""Replicated jobs (issue 15): replicas, their parent, their escrow; workers' mismatches.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05

``jobs.replicas``/``parent_id``: a replicated job and its replicas.
``jobs.ran_owners``: the owners whose workers ran a replica (no two replicas
of one job on one owner's workers). ``jobs.escrow_leases``: a replica's paid
leases, held from the job's owner until the quorum, and ``jobs.settled``
whether they were then paid (a replica's output is shown only then).
``workers.mismatches``:
replicas a worker finished that the quorum outvoted. A log recorded before
has no replicated job, so the defaults are what a replay would fold.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("replicas", sa.Integer, nullable=False, server_default="1"))
        batch.add_column(sa.Column("parent_id", sa.String(64)))
        batch.add_column(sa.Column("ran_owners", sa.Text, nullable=False, server_default=""))
        batch.add_column(sa.Column("escrow_leases", sa.Text, nullable=False, server_default=""))
        batch.add_column(sa.Column("settled", sa.String(8), nullable=False, server_default=""))
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("mismatches", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("mismatches")
    with op.batch_alter_table("jobs") as batch:
        for column in ("settled", "escrow_leases", "ran_owners", "parent_id", "replicas"):
            batch.drop_column(column)
