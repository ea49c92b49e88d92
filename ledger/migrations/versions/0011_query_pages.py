"""Indexes for the query side's pages (issue 16).

Revision ID: 0011
Revises: 0008
Create Date: 2026-12-04

A member's ``jobs`` page walks ``ix_jobs_owner_submitted`` (owner, then
newest first, ties by job id) and stops after the page: it replaces
``ix_jobs_owner``, its prefix. ``workers --mine`` walks ``ix_workers_owner``.
"""
from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_owner_submitted", "jobs", ["owner", "submitted_at", "job_id"])
    op.drop_index("ix_jobs_owner", table_name="jobs")
    op.create_index("ix_workers_owner", "workers", ["owner", "worker_id"])


def downgrade() -> None:
    op.drop_index("ix_workers_owner", table_name="workers")
    op.create_index("ix_jobs_owner", "jobs", ["owner"])
    op.drop_index("ix_jobs_owner_submitted", table_name="jobs")
