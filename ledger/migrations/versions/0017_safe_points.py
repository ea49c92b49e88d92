"""Replicas compared at the same safe-point count (issue 15).

Revision ID: 0017
Revises: 0011 (the lead re-chains it at merge)
Create Date: 2026-12-04

``jobs.safe_points``: the safe points (yields) a job passed up to its
committed checkpoint (NULL once a checkpoint came without a count).
``jobs.safe_point_hashes``: a replica's committed checkpoints by count, to
compare with its siblings'. ``jobs.barred_owners``: owners whose workers may
not run a replica again (their checkpoint was outvoted). A log recorded
before has no counts: a job past a checkpoint replays to NULL (its
checkpoints were ``checkpoint.committed`` 1, without a count), the others
to 0 and empty strings, so the migrated rows are what a replay folds.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("safe_points", sa.BigInteger, server_default="0"))
        batch.add_column(sa.Column("safe_point_hashes", sa.Text, nullable=False, server_default=""))
        batch.add_column(sa.Column("barred_owners", sa.Text, nullable=False, server_default=""))
    op.execute("UPDATE jobs SET safe_points = NULL WHERE checkpoint > 0")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for column in ("barred_owners", "safe_point_hashes", "safe_points"):
            batch.drop_column(column)
