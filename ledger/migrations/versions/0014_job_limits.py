"""Job time limits and artifacts (issue 17).

Revision ID: 0014
Revises: 0011
Create Date: 2026-12-04

``jobs.max_runtime_ms`` and ``jobs.deadline_at``: the limits a job was
submitted with (``--max-runtime``, ``--deadline``; ledger.fold_limits);
``jobs.errored_ms``: a limited job's paid errored time, which counts toward
its runtime (0 for every job without a limit, as replay gives).
``jobs.artifacts_sha256``: the tar of the files its finishing lease wrote to
``outputs/``. No event before this revision had a limit or artifacts, so
NULL is what a replay of the log gives.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("max_runtime_ms", sa.BigInteger))
        batch.add_column(sa.Column("deadline_at", sa.String(32)))
        batch.add_column(sa.Column("errored_ms", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("artifacts_sha256", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for name in ("artifacts_sha256", "errored_ms", "deadline_at", "max_runtime_ms"):
            batch.drop_column(name)
