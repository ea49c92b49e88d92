"""Portal sessions kept on the server.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

A session cookie names a row here (by the sha256 of its id); log-out deletes
the row, so a copied cookie stops working at once, not only after a
password change. Not a projection: no event carries a session.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("session_sha256", sa.String(64), primary_key=True),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    op.create_index("ix_web_sessions_account", "web_sessions", ["account"])


def downgrade() -> None:
    op.drop_index("ix_web_sessions_account", "web_sessions")
    op.drop_table("web_sessions")
