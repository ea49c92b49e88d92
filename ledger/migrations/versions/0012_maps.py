"""Map jobs (issue 17): a map's parent and its chunk children.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04

``jobs.map_id``/``chunk``: a chunk child's map and number. On the map:
``chunks``, ``chunk_size``, ``items``, ``allow_failures``, and its reduce
(``reduce_entry``, ``reduce_module_sha256``). ``ix_jobs_map`` lists a map's
chunks in order. A log recorded before has no map, so the defaults are what
a replay would fold.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_COUNTS = ("chunk", "chunks", "chunk_size", "items", "allow_failures")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("map_id", sa.String(64)))
        for column in _COUNTS:
            batch.add_column(sa.Column(column, sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("reduce_entry", sa.String(128)))
        batch.add_column(sa.Column("reduce_module_sha256", sa.String(64)))
    op.create_index("ix_jobs_map", "jobs", ["map_id", "chunk"])


def downgrade() -> None:
    op.drop_index("ix_jobs_map", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        for column in ("reduce_module_sha256", "reduce_entry", *reversed(_COUNTS), "map_id"):
            batch.drop_column(column)
