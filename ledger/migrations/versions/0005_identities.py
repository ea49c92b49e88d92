"""Broker identities.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

Every member's key and every worker's key is a broker user of its own; the
ledger keeps each one's hash (RabbitMQ's salted SHA-256, never the key) and
whether it is enabled, and an account can be disabled by the operator.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("disabled", sa.Boolean, nullable=False, server_default="0"))
    op.create_table(
        "identities",
        sa.Column("name", sa.String(80), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("worker_id", sa.String(64)),
        sa.Column("key_hash", sa.String(64)),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("folded_seq", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_identities_account", "identities", ["account"])


def downgrade() -> None:
    op.drop_index("ix_identities_account", "identities")
    op.drop_table("identities")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("disabled")
