"""A job's network: the owner's request and the worker owner's permission (issue 13).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

``jobs.network``: the job asked for the network (``job.submitted`` v2).
``workers.allow_network``: the worker's owner allows it (``worker.registered``
v2, said by the worker each time it starts). Both false for every row folded
before: a v1 event neither asked nor allowed.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("network", sa.Boolean(), nullable=False, server_default="0"))
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("allow_network", sa.Boolean(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("allow_network")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("network")
