"""Months of the log and month-end balance snapshots.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

Money: every calendar month (UTC) of the log with the sequences it holds,
and every account's balance as each month closed, so that a monthly
statement replays only its own month.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "months",
        sa.Column("month", sa.String(7), primary_key=True),
        sa.Column("first_seq", sa.BigInteger, nullable=False),
        sa.Column("last_seq", sa.BigInteger),
        sa.Column("folded_seq", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "month_balances",
        sa.Column("snapshot_id", sa.String(80), primary_key=True),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("balance", sa.BigInteger, nullable=False),
        sa.Column("credit_limit", sa.BigInteger, nullable=False),
        sa.Column("opened_at", sa.String(32), nullable=False),
        sa.Column("folded_seq", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_month_balances_month", "month_balances", ["month"])


def downgrade() -> None:
    op.drop_index("ix_month_balances_month", "month_balances")
    op.drop_table("month_balances")
    op.drop_table("months")
