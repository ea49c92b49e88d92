"""The portal's credentials.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

Members of the web portal (argon2 password hashes) and sign-ups waiting for
their e-mail confirmation. They are not projections of the log: no event
carries a password, so replay neither builds nor compares them.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_members",
        sa.Column("account", sa.String(64), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("password_changed_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "web_signups",
        sa.Column("token_sha256", sa.String(64), primary_key=True),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("expires_at", sa.String(32), nullable=False),
    )
    op.create_index("ix_web_signups_account", "web_signups", ["account"])


def downgrade() -> None:
    op.drop_index("ix_web_signups_account", "web_signups")
    op.drop_table("web_signups")
    op.drop_table("web_members")
