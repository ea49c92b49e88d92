"""The initial ledger: the event log, blobs, the outbox and the projections.

Revision ID: 0001
Revises:
Create Date: 2026-05-20

``events`` is append-only, and the database itself enforces it with triggers,
so no code path (ours, a console, a careless script) can edit history.
Everything is written out here rather than imported from ledger.tables:
this migration must keep creating what it created the day it was written.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

#: event and outbox sequence: SQLite only makes an INTEGER PRIMARY KEY the rowid alias
SEQUENCE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

SQLITE_APPEND_ONLY = [
    f"""
    CREATE TRIGGER events_no_{verb.lower()} BEFORE {verb} ON events
    BEGIN
        SELECT RAISE(ABORT, 'events is append-only: {verb} refused');
    END
    """
    for verb in ("UPDATE", "DELETE")
]

# restrict_violation (23001) is an integrity error, as SQLite's RAISE(ABORT)
# is, so both backends surface as sqlalchemy.exc.IntegrityError. The message
# is concatenated, not formatted: a "%" would come out doubled in --sql output.
POSTGRESQL_APPEND_ONLY = [
    """
    CREATE FUNCTION events_refuse_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION USING
            MESSAGE = 'events is append-only: ' || TG_OP || ' refused',
            ERRCODE = 'restrict_violation';
    END
    $$
    """,
    """
    CREATE TRIGGER events_no_update_or_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change()
    """,
    # TRUNCATE fires no row triggers, so it needs its own
    """
    CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change()
    """,
]


def _dialect() -> str:
    # get_context() rather than get_bind(): it also works for `alembic upgrade --sql`
    return op.get_context().dialect.name


def upgrade() -> None:
    _create_log_tables()
    _create_projection_tables()
    statements = POSTGRESQL_APPEND_ONLY if _dialect() == "postgresql" else SQLITE_APPEND_ONLY
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    for table in ("jobs", "workers", "accounts", "positions", "outbox", "blobs", "events"):
        # dropping a table drops its indexes and triggers with it
        op.drop_table(table)
    if _dialect() == "postgresql":
        op.execute("DROP FUNCTION events_refuse_change()")


def _create_log_tables() -> None:
    op.create_table(
        "events",
        sa.Column("seq", SEQUENCE, primary_key=True, autoincrement=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("occurred_at", sa.String(32), nullable=False),
        sa.Column("recorded_at", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("correlation_id", sa.String(128)),
        sa.Column("causation_id", sa.String(128)),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        # named, so a later (batch-mode) migration can refer to it
        sa.UniqueConstraint("event_id", name="uq_events_event_id"),
    )
    op.create_index("ix_events_type", "events", ["type"])
    op.create_index("ix_events_recorded_at", "events", ["recorded_at"])

    op.create_table(
        "blobs",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )

    op.create_table(
        "outbox",
        sa.Column("id", SEQUENCE, primary_key=True, autoincrement=True),
        sa.Column("event_seq", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("routing_key", sa.String(64), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("reply_to", sa.String(255)),
        sa.Column("correlation_id", sa.String(128)),
    )


def _create_projection_tables() -> None:
    op.create_table(
        "positions",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("folded_seq", sa.BigInteger(), nullable=False),
    )

    op.create_table(
        "accounts",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("credit_limit", sa.BigInteger(), nullable=False),
        sa.Column("opened_at", sa.String(32), nullable=False),
        sa.Column("folded_seq", sa.BigInteger(), nullable=False),
    )

    op.create_table(
        "workers",
        sa.Column("worker_id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("lease_seconds", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("speed", sa.BigInteger()),
        sa.Column("speed_measured_at", sa.String(32)),
        sa.Column("registered_at", sa.String(32), nullable=False),
        sa.Column("folded_seq", sa.BigInteger(), nullable=False),
    )

    op.create_table(
        "jobs",
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("entry", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("module_sha256", sa.String(64), nullable=False),
        sa.Column("state_sha256", sa.String(64), nullable=False),
        sa.Column("checkpoint", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("expiries", sa.Integer(), nullable=False),
        sa.Column("executed_ms", sa.BigInteger(), nullable=False),
        sa.Column("probe", sa.Boolean(), nullable=False),
        sa.Column("lease_id", sa.String(64)),
        sa.Column("worker_id", sa.String(64)),
        sa.Column("result_sha256", sa.String(64)),
        sa.Column("error", sa.Text()),
        sa.Column("submitted_at", sa.String(32), nullable=False),
        sa.Column("finished_at", sa.String(32)),
        sa.Column("folded_seq", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_jobs_owner", "jobs", ["owner"])
    op.create_index("ix_jobs_status", "jobs", ["status"])
