"""Leases and speed samples; outbox rows that go to other exchanges.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

The job life cycle: every dispatch of a job is a lease row (which worker held
which state, checked out and checked in, how it ended); speed samples keep
each worker's measured speed history; jobs may target one worker (probes);
outbox rows may be published to another exchange (lease deliveries).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("lease_id", sa.String(64), primary_key=True),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("worker_id", sa.String(64), nullable=False),
        sa.Column("checkpoint", sa.Integer, nullable=False),
        sa.Column("state_sha256", sa.String(64), nullable=False),
        sa.Column("price", sa.BigInteger, nullable=False),
        sa.Column("lease_seconds", sa.Integer, nullable=False),
        sa.Column("granted_at", sa.String(32), nullable=False),
        sa.Column("deadline", sa.String(32), nullable=False),
        sa.Column("ended_at", sa.String(32)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("executed_ms", sa.BigInteger, nullable=False),
        sa.Column("folded_seq", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_leases_job_id", "leases", ["job_id"])
    op.create_index("ix_leases_worker_id", "leases", ["worker_id"])
    op.create_table(
        "speed_samples",
        sa.Column("sample_id", sa.String(32), primary_key=True),
        sa.Column("worker_id", sa.String(64), nullable=False),
        sa.Column("speed", sa.BigInteger, nullable=False),
        sa.Column("measured_at", sa.String(32), nullable=False),
        sa.Column("folded_seq", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_speed_samples_worker_id", "speed_samples", ["worker_id"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("target_worker_id", sa.String(64)))
        batch.add_column(sa.Column("probe_expected_sha256", sa.String(64)))
        batch.add_column(sa.Column("probe_work", sa.BigInteger))
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("exchange", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("exchange")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("probe_work")
        batch.drop_column("probe_expected_sha256")
        batch.drop_column("target_worker_id")
    op.drop_index("ix_speed_samples_worker_id", "speed_samples")
    op.drop_table("speed_samples")
    op.drop_index("ix_leases_worker_id", "leases")
    op.drop_index("ix_leases_job_id", "leases")
    op.drop_table("leases")
